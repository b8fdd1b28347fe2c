package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/objstore"
)

// openShared opens the object store a fleet shares, nil without one. A
// store that does not answer at start is not fatal: each pull then asks
// the upstream, and the store is asked again on the next pull.
func openShared(ctx context.Context, st config.Storage, log *slog.Logger) (*objstore.Store, error) {
	if st.S3 == nil {
		return nil, nil
	}
	params, err := st.S3.DriverParameters()
	if err != nil {
		return nil, err
	}
	obj, err := objstore.Open(ctx, "s3", params)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := obj.Check(cctx); err != nil {
		log.Warn("shared store: not answering at start; pulls ask the upstreams until it does", "err", err)
	} else {
		log.Info("shared store", "driver", obj.Name(), "bucket", st.S3.Bucket, "redirect", st.Redirect)
	}
	return obj, nil
}
