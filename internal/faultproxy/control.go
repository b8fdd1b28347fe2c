package faultproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// ControlHandler serves the control API:
//
//	POST /mode?set=MODE[&retry_after=N|date:N][&for=DURATION][&ratelimit_remaining=N]
//	                   switch (PUT too; see ParseSetting); answers
//	                   "mode MODE" once the mode is in effect, 400 for
//	                   a setting it cannot carry out
//	POST /mode         with MODE as the body: the same without parameters
//	GET /mode          "mode MODE", the mode in effect
//	GET /stats         {"mode":"503","since":"...","requests":{"pass":12,"503":40,...}}
func (p *Proxy) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/mode", p.handleMode)
	mux.HandleFunc("/stats", p.handleStats)
	return mux
}

func (p *Proxy) handleMode(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		fmt.Fprintf(w, "mode %s\n", p.Setting().Mode)
	case http.MethodPost, http.MethodPut:
		q := r.URL.Query()
		if !q.Has("set") {
			// The first form of the API: the mode alone as the body.
			b, err := io.ReadAll(io.LimitReader(r.Body, 64))
			if err != nil {
				http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
				return
			}
			q.Set("set", strings.TrimSpace(string(b)))
		}
		s, err := ParseSetting(q)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := p.Set(r.Context(), s); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// The mode just set, even if a short For has run out since.
		fmt.Fprintf(w, "mode %s\n", s.mode())
	default:
		http.Error(w, "GET or POST /mode?set=MODE", http.StatusMethodNotAllowed)
	}
}

func (p *Proxy) handleStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "GET /stats", http.StatusMethodNotAllowed)
		return
	}
	b, err := json.Marshal(p.Stats())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}
