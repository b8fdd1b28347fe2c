package proxy

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/breakwater-registry/breakwater/upstream"
)

// checkRange validates a Range header against a blob's size before
// http.ServeContent sees it, so that a bad range gets an OCI error body
// rather than ServeContent's plain text. Valid ranges are left for
// ServeContent to serve.
func checkRange(header string, size int64) error {
	if header == "" {
		return nil
	}
	bad := func(why string) error {
		return errorf(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid, "invalid Range %q: %s", upstream.OneLine(header, 100), why)
	}
	specs, ok := strings.CutPrefix(header, "bytes=")
	if !ok {
		return bad("only bytes ranges are supported")
	}
	satisfiable := false
	for _, spec := range strings.Split(specs, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		startStr, endStr, ok := strings.Cut(spec, "-")
		if !ok {
			return bad("want start-end")
		}
		startStr, endStr = strings.TrimSpace(startStr), strings.TrimSpace(endStr)
		if startStr == "" {
			n, err := strconv.ParseInt(endStr, 10, 64)
			if err != nil || n < 0 {
				return bad("invalid suffix length")
			}
			if n > 0 && size > 0 {
				satisfiable = true
			}
			continue
		}
		start, err := strconv.ParseInt(startStr, 10, 64)
		if err != nil || start < 0 {
			return bad("invalid start")
		}
		if endStr != "" {
			end, err := strconv.ParseInt(endStr, 10, 64)
			if err != nil || end < start {
				return bad("invalid end")
			}
		}
		if start < size {
			satisfiable = true
		}
	}
	if !satisfiable {
		return bad("no part of it lies within the blob's " + strconv.FormatInt(size, 10) + " bytes")
	}
	return nil
}
