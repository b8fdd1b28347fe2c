package main

import (
	"fmt"
	"log/slog"

	"github.com/breakwater-registry/breakwater/access"
	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/proxy"
)

// accessPolicy is the proxy's Access for the auth block: nil (open) without
// auth.htpasswd, else the policy over the htpasswd file, read now.
func accessPolicy(a config.Auth, log *slog.Logger) (proxy.Access, error) {
	if a.Htpasswd == "" {
		log.Info("client authentication off: whoever reaches Breakwater may pull whatever the upstreams' credentials can read (set auth.htpasswd)")
		return nil, nil
	}
	p, err := access.New(a.AccessConfig())
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	log.Info("client authentication on", "htpasswd", a.Htpasswd, "users", p.Users(), "realm", p.Realm(),
		"access_entries", len(a.Access), "anonymous", p.AllowsAnonymous())
	return p, nil
}
