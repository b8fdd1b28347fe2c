package proxy

import (
	"net/http"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/upstream"
)

// kind is which pull API a request addresses.
type kind int

const (
	kindManifest kind = iota + 1
	kindBlob
	kindTags
	kindReferrers
)

func (k kind) String() string {
	switch k {
	case kindManifest:
		return "manifests"
	case kindBlob:
		return "blobs"
	case kindTags:
		return "tags"
	case kindReferrers:
		return "referrers"
	}
	return "unknown"
}

// target is a parsed pull request: which upstream, which repository as the
// upstream names it, which API and which reference.
type target struct {
	upstream *registry
	// repo is the repository as the upstream names it ("library/alpine").
	repo string
	// clientName is the name as the client sent it, for rewriting links.
	clientName string
	kind       kind
	// ref is a tag or a digest for manifests, a digest for blobs and
	// referrers, empty for tags.
	ref string
	// dgst is ref parsed, when ref is a digest.
	dgst digest.Digest
}

// The OCI distribution grammar for repository names and tags.
var (
	pathComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	nameRE        = regexp.MustCompile(`^` + pathComponent + `(?:/` + pathComponent + `)*$`)
	tagRE         = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxNameLength is the distribution spec's limit for a repository name
// including any registry host in front of it.
const maxNameLength = 255

// parseTarget parses the path after "/v2/" and picks the upstream:
// the ns query parameter first (containerd's hosts.toml mirrors), then a
// registry host as the first path element, then the default upstream.
func (s *Server) parseTarget(r *http.Request, rest string) (*target, error) {
	segs := strings.Split(rest, "/")
	n := len(segs)
	t := &target{}
	var nameSegs []string
	switch {
	case n >= 3 && segs[n-2] == "manifests":
		t.kind, t.ref, nameSegs = kindManifest, segs[n-1], segs[:n-2]
	case n >= 3 && segs[n-2] == "blobs":
		t.kind, t.ref, nameSegs = kindBlob, segs[n-1], segs[:n-2]
	case n >= 3 && segs[n-2] == "tags" && segs[n-1] == "list":
		t.kind, nameSegs = kindTags, segs[:n-2]
	case n >= 3 && segs[n-2] == "referrers":
		t.kind, t.ref, nameSegs = kindReferrers, segs[n-1], segs[:n-2]
	default:
		return nil, errorf(http.StatusNotFound, CodeUnsupported, "no pull API at /v2/%s", rest)
	}
	t.clientName = strings.Join(nameSegs, "/")
	if t.clientName == "" || len(t.clientName) > maxNameLength {
		return nil, errorf(http.StatusBadRequest, CodeNameInvalid, "invalid repository name %q", t.clientName)
	}
	if err := t.parseRef(); err != nil {
		return nil, err
	}

	name := t.clientName
	switch ns := r.URL.Query().Get("ns"); {
	case ns != "":
		up, err := s.upstreamFor(ns)
		if err != nil {
			return nil, err
		}
		t.upstream = up
	case len(nameSegs) > 1 && looksLikeHost(nameSegs[0]):
		up, err := s.upstreamFor(nameSegs[0])
		if err != nil {
			return nil, err
		}
		t.upstream = up
		name = strings.Join(nameSegs[1:], "/")
	default:
		t.upstream = s.upstreams[s.defaultUpstream]
	}
	if !nameRE.MatchString(name) {
		return nil, errorf(http.StatusBadRequest, CodeNameInvalid, "invalid repository name %q", t.clientName)
	}
	t.repo = dockerHubName(t.upstream, name)
	return t, nil
}

// dockerHubName is name as up knows it: Docker Hub puts official images,
// named with one path component, under library/.
func dockerHubName(up *registry, name string) string {
	if up.DockerHub() && !strings.Contains(name, "/") {
		return "library/" + name
	}
	return name
}

func (t *target) parseRef() error {
	switch t.kind {
	case kindManifest:
		if strings.Contains(t.ref, ":") {
			d, err := digest.Parse(t.ref)
			if err != nil {
				return errorf(http.StatusBadRequest, CodeDigestInvalid, "invalid digest %q: %v", t.ref, err)
			}
			t.dgst = d
			return nil
		}
		if !tagRE.MatchString(t.ref) {
			// No manifest can have such a tag, so it is unknown; the spec
			// keeps MANIFEST_INVALID for manifests being pushed.
			return errorf(http.StatusNotFound, CodeManifestUnknown, "manifest unknown: %q is not a valid tag", upstream.OneLine(t.ref, 200))
		}
	case kindBlob, kindReferrers:
		d, err := digest.Parse(t.ref)
		if err != nil {
			return errorf(http.StatusBadRequest, CodeDigestInvalid, "invalid digest %q: %v", t.ref, err)
		}
		t.dgst = d
	}
	return nil
}

// looksLikeHost tells a registry host ("ghcr.io", "localhost:5000") from a
// repository path component the way Docker's reference grammar does: a host
// has a dot or a port, or is localhost.
func looksLikeHost(seg string) bool {
	return strings.ContainsAny(seg, ".:") || seg == "localhost"
}
