package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/coord"
	"github.com/breakwater-registry/breakwater/objstore"
)

// openShared opens the object store a fleet shares, nil without one. A
// store that does not answer at start is not fatal: each pull then asks
// the upstream, and the store is asked again on the next pull.
func openShared(ctx context.Context, st config.Storage, log *slog.Logger) (*objstore.Store, error) {
	name, params, err := st.Driver()
	if err != nil || name == "" {
		return nil, err
	}
	obj, err := objstore.Open(ctx, name, params)
	if err != nil {
		return nil, err
	}
	// Where the store is, for the log: azure names an account's
	// container, the others a bucket.
	where := []any{"driver", obj.Name(), "bucket", params["bucket"]}
	if name == "azure" {
		where = []any{"driver", obj.Name(), "account", params["accountname"], "container", params["container"]}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := obj.Check(cctx); err != nil {
		log.Warn("shared store: not answering at start; pulls ask the upstreams until it does", append(where, "err", err)...)
	} else {
		log.Info("shared store", append(where, "redirect", st.Redirect)...)
	}
	return obj, nil
}

// fleetMember is this replica's place in a fleet: its coordination through
// Redis and the secret the replicas share.
type fleetMember struct {
	coord  *coord.Fleet
	secret string
	// peerTLS is how this replica speaks TLS to the others.
	peerTLS *tls.Config
}

func (m *fleetMember) fleet() *coord.Fleet {
	if m == nil {
		return nil
	}
	return m.coord
}

func (m *fleetMember) peerSecret() string {
	if m == nil {
		return ""
	}
	return m.secret
}

func (m *fleetMember) tlsConfig() *tls.Config {
	if m == nil {
		return nil
	}
	return m.peerTLS
}

// peerTLS is the TLS the replicas speak to each other's https advertise
// URLs: their certificates verified against cluster.ca_file (the system's
// CAs without it) for cluster.server_name (the advertised host without
// it), and cluster.cert_file shown as this replica's client
// certificate, read at each new connection so that a rotated pair (cert-
// manager's) is taken without a restart.
func peerTLS(cl config.Cluster) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cl.ServerName}
	if cl.CAFile != "" {
		pool, err := readCAs(cl.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	if cl.CertFile != "" {
		// Refused at start rather than at the first peer stream.
		if _, err := tls.LoadX509KeyPair(cl.CertFile, cl.KeyFile); err != nil {
			return nil, fmt.Errorf("cluster.cert_file, cluster.key_file: %w", err)
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(cl.CertFile, cl.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("cluster.cert_file, cluster.key_file: %w", err)
			}
			return &c, nil
		}
	}
	return tc, nil
}

// readCAs reads a PEM bundle of CA certificates.
func readCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}

// openFleet joins the fleet cfg names, nil without redis.addr. Redis that
// does not answer is not fatal: each fetch then happens alone.
func openFleet(cfg config.Config, log *slog.Logger) (*fleetMember, error) {
	r := cfg.Redis
	if r.Addr == "" {
		return nil, nil
	}
	if cfg.Cluster.Advertise == "" {
		return nil, errors.New("cluster.advertise (or --advertise): required with redis.addr: the URL the other replicas reach this one at")
	}
	secret, err := readSecret(cfg.Cluster.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.secret_file: %w", err)
	}
	password := r.Password
	if r.PasswordFile != "" {
		if password, err = readSecret(r.PasswordFile); err != nil {
			return nil, fmt.Errorf("redis.password_file: %w", err)
		}
	}
	var tc *tls.Config
	if r.TLS {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
		if r.CAFile != "" {
			if tc.RootCAs, err = readCAs(r.CAFile); err != nil {
				return nil, fmt.Errorf("redis.ca_file: %w", err)
			}
		}
	}
	ptc, err := peerTLS(cfg.Cluster)
	if err != nil {
		return nil, err
	}
	c, err := coord.New(coord.Options{Addr: r.Addr, Password: password, DB: r.DB, TLS: tc,
		Self: strings.TrimSuffix(cfg.Cluster.Advertise, "/"), Logger: log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		log.Warn("fleet: Redis not answering at start; each fetch happens alone until it does", "addr", r.Addr, "err", err)
	} else {
		log.Info("fleet", "redis", r.Addr, "advertise", cfg.Cluster.Advertise)
	}
	return &fleetMember{coord: c, secret: secret, peerTLS: ptc}, nil
}

// readSecret reads a secret from a file, without trailing newlines; an
// empty one is refused.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// bracketIPv6 puts an IPv6 host of an advertise URL in brackets, as a URL
// needs it: http://$(POD_IP):5000 from the downward API is
// http://fd00::5:5000 on an IPv6 pod, and no shell in the image can
// bracket it. The port is what follows the last colon. Anything else is
// returned as it is, for the configuration's check to judge.
func bracketIPv6(advertise string) string {
	scheme, rest, ok := strings.Cut(advertise, "://")
	if !ok || strings.HasPrefix(rest, "[") || strings.Count(rest, ":") < 2 {
		return advertise
	}
	i := strings.LastIndexByte(rest, ':')
	host, port := rest[:i], rest[i+1:]
	if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
		return advertise
	}
	return scheme + "://[" + host + "]:" + port
}
