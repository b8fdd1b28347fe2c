package proxy

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/breakwater-registry/breakwater/upstream"
)

// maxListBody bounds a tag list or referrers index held in memory.
const maxListBody = 16 << 20

// serveTags proxies the tag list: it changes too often to cache, and a
// client listing tags wants the upstream's current answer.
func (s *Server) serveTags(w http.ResponseWriter, r *http.Request, t *target) error {
	n := -1
	if v := r.URL.Query().Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			return errorf(http.StatusBadRequest, CodePaginationInvalid, "invalid n %q: want a non-negative number", upstream.OneLine(v, 50))
		}
	}
	noteCache(r, cachePass)
	resp, err := t.upstream.Tags(r.Context(), t.repo, n, r.URL.Query().Get("last"))
	return s.relay(w, r, t, resp, err)
}

// serveReferrers proxies the referrers API, with its artifactType filter.
func (s *Server) serveReferrers(w http.ResponseWriter, r *http.Request, t *target) error {
	noteCache(r, cachePass)
	resp, err := t.upstream.Referrers(r.Context(), t.repo, t.dgst, r.URL.Query().Get("artifactType"), r.Header.Values("Accept"))
	return s.relay(w, r, t, resp, err)
}

// relay passes one small JSON answer through from upstream, rewriting a
// pagination Link so that the next page is asked of Breakwater with the
// client's own repository name.
func (s *Server) relay(w http.ResponseWriter, r *http.Request, t *target, resp *http.Response, err error) error {
	if err != nil {
		return upstreamError(t.upstream, err, t.kind)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBody))
	if err != nil {
		return unavailable(t.upstream.Name(), "unreachable: body cut off: "+upstream.NetworkCause(err), 0)
	}
	h := w.Header()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	}
	for _, k := range []string{"OCI-Filters-Applied"} {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	if link := resp.Header.Get("Link"); link != "" {
		h.Set("Link", rewriteLink(link, t, r.URL.Query().Get("ns")))
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

// rewriteLink maps the upstream's next-page link (`</v2/library/x/tags/list?
// last=a&n=2>; rel="next"`) onto the path the client used.
func rewriteLink(link string, t *target, ns string) string {
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start < 0 || end < start {
		return link
	}
	u, err := url.Parse(link[start+1 : end])
	if err != nil {
		return link
	}
	prefix := "/v2/" + t.repo + "/"
	if !strings.HasPrefix(u.Path, prefix) {
		return link
	}
	next := url.URL{Path: "/v2/" + t.clientName + "/" + strings.TrimPrefix(u.Path, prefix)}
	q := u.Query()
	if ns != "" {
		q.Set("ns", ns)
	}
	next.RawQuery = q.Encode()
	return link[:start+1] + next.String() + link[end:]
}
