package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/breakwater-registry/breakwater/warm"
)

// passwordEnv holds the password of --user when no --password-file is
// given: a password on the command line would show in ps and shell
// history.
const passwordEnv = "BREAKWATER_PASSWORD"

// mirrorLogin is how warm and check --mirror authenticate towards a
// Breakwater with client authentication on: --user with the password of
// --password-file or $BREAKWATER_PASSWORD, else what `docker login MIRROR`
// stored for the mirror's host, else nobody.
type mirrorLogin struct {
	user, passwordFile string
}

func (l *mirrorLogin) register(fs *flag.FlagSet) {
	fs.StringVar(&l.user, "user", "", "user towards a Breakwater with client authentication on; the password from --password-file or $"+passwordEnv+" (default: what docker login stored for the mirror's host)")
	fs.StringVar(&l.passwordFile, "password-file", "", "file holding the password of --user")
}

// context returns ctx carrying the credentials for the Breakwater at
// mirror; ctx itself when there are none.
func (l *mirrorLogin) context(ctx context.Context, mirror string) (context.Context, error) {
	user, password, err := l.resolve(mirror)
	if err != nil || user == "" {
		return ctx, err
	}
	return warm.WithCredentials(ctx, user, password), nil
}

func (l *mirrorLogin) resolve(mirror string) (user, password string, err error) {
	switch {
	case l.passwordFile != "" && l.user == "":
		return "", "", errors.New("--password-file needs --user")
	case l.user != "" && l.passwordFile != "":
		b, err := os.ReadFile(l.passwordFile)
		if err != nil {
			return "", "", fmt.Errorf("--password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
		if password == "" {
			return "", "", fmt.Errorf("--password-file %s is empty", l.passwordFile)
		}
		return l.user, password, nil
	case l.user != "":
		password = os.Getenv(passwordEnv)
		if password == "" {
			return "", "", fmt.Errorf("--user %s: give its password with --password-file or $%s", l.user, passwordEnv)
		}
		return l.user, password, nil
	}
	u, err := url.Parse(mirror)
	if err != nil || u.Host == "" {
		return "", "", nil // the mirror's own check says what is wrong
	}
	reg, err := name.NewRegistry(u.Host, name.Insecure)
	if err != nil {
		return "", "", nil
	}
	a, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		return "", "", fmt.Errorf("the Docker config's credentials for %s: %w", u.Host, err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		return "", "", fmt.Errorf("the Docker config's credentials for %s: %w", u.Host, err)
	}
	return cfg.Username, cfg.Password, nil
}
