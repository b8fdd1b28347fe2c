package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/breakwater-registry/breakwater/proxy"
	"github.com/breakwater-registry/breakwater/upstream"
	"github.com/breakwater-registry/breakwater/warm"
)

// maxWarmImages bounds one warm request; automation sends lists, not
// catalogues.
const maxWarmImages = 200

type warmRequest struct {
	Images    []string `json:"images"`
	Platforms []string `json:"platforms"`
}

type warmResponse struct {
	OK      int           `json:"ok"`
	Failed  int           `json:"failed"`
	Results []warm.Result `json:"results"`
}

// warmAPI serves POST /_breakwater/v1/warm: it pulls the images through
// Breakwater itself (self is warm's client towards it), exactly as
// breakwater warm does, and answers 200 when every image is cached, 502
// when any failed, 400 for a bad request. With client authentication on,
// 403 when the user may not pull one of the images, before any is pulled;
// the pulls then go through Breakwater with the caller's credentials.
func warmAPI(self *upstream.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req warmRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			warmError(w, http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("request body: %v (want {\"images\": [...], \"platforms\": [...]})", err))
			return
		}
		if len(req.Images) == 0 || len(req.Images) > maxWarmImages {
			warmError(w, http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("images: want 1 to %d image references, got %d", maxWarmImages, len(req.Images)))
			return
		}
		var platforms []v1.Platform
		for _, p := range req.Platforms {
			pl, err := warm.ParsePlatform(p)
			if err != nil {
				warmError(w, http.StatusBadRequest, "UNSUPPORTED", fmt.Sprintf("platforms: %v", err))
				return
			}
			platforms = append(platforms, pl)
		}
		var denied []string
		for _, img := range req.Images {
			// A reference that does not parse fails its own pull below.
			if host, repo, _, _, err := warm.NormalizeReference(img); err == nil {
				if err := proxy.CheckPull(r.Context(), host, repo); err != nil {
					denied = append(denied, fmt.Sprintf("%s: %v", img, err))
				}
			}
		}
		if len(denied) > 0 {
			warmError(w, http.StatusForbidden, "DENIED", "nothing warmed: "+strings.Join(denied, "; "))
			return
		}
		ctx := r.Context()
		if user, pass, ok := r.BasicAuth(); ok {
			ctx = warm.WithCredentials(ctx, user, pass)
		}
		results := warm.Images(ctx, req.Images, warm.Options{Mirror: self, Platforms: platforms})
		resp := warmResponse{Results: results}
		for _, res := range results {
			if res.Err != nil {
				resp.Failed++
			} else {
				resp.OK++
			}
		}
		status := http.StatusOK
		if resp.Failed > 0 {
			status = http.StatusBadGateway
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(resp)
	})
}

func warmError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}
