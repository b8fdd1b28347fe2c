package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/tlsserver"
)

// listenerFor binds cfg.Listen, speaking TLS when cfg.TLS names a
// certificate; stop ends the watch of the certificate files (call it once
// the server is done). A certificate, key or CA file that cannot be read
// or parsed is an error naming the key, the path and the cause.
func listenerFor(ctx context.Context, cfg config.Config, log *slog.Logger) (ln net.Listener, stop func(), err error) {
	var reloader *tlsserver.Reloader
	if cfg.TLS.Enabled() {
		// Before binding, so that bad files leave the port alone.
		reloader, err = tlsserver.New(tlsserver.Files{
			CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, ClientCAFile: cfg.TLS.ClientCAFile,
		}, log)
		if err != nil {
			return nil, nil, err
		}
	}
	if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if reloader == nil {
		log.Info("tls off: the listen address speaks plain HTTP", "listen", ln.Addr().String())
		return ln, func() {}, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		reloader.Watch(wctx, tlsserver.DefaultInterval)
	}()
	log.Info("tls on: the listen address speaks TLS, HTTP/1.1 only",
		append([]any{"listen", ln.Addr().String(), "mutual_tls", reloader.Mutual(),
			"reload_every", tlsserver.DefaultInterval.String()}, reloader.LogAttrs()...)...)
	return tls.NewListener(ln, reloader.TLSConfig()), func() { cancel(); <-done }, nil
}

// http1Only is an http.Server's TLSNextProto that keeps net/http from
// adding HTTP/2 on its own: the crafted 503's reason phrase exists only in
// HTTP/1.1 (see internal/tlsserver).
func http1Only() map[string]func(*http.Server, *tls.Conn, http.Handler) {
	return map[string]func(*http.Server, *tls.Conn, http.Handler){}
}
