package testproc

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWaitReady: ready once the func says so; a process that exits, or a
// timeout, ends the wait with the func's last error.
func TestWaitReady(t *testing.T) {
	errNotYet := errors.New("not yet")
	for _, c := range []struct {
		name    string
		argv    []string
		okAfter int // calls before ready returns nil; -1: never
		want    string
	}{
		{"ready at once", []string{"sleep", "30"}, 0, ""},
		{"ready on the third call", []string{"sleep", "30"}, 2, ""},
		{"never ready", []string{"sleep", "30"}, -1, "not ready after 200ms: not yet"},
		{"exits first", []string{"true"}, -1, "exited before it was ready: not yet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Start(exec.Command(c.argv[0], c.argv[1:]...), filepath.Join(t.TempDir(), "log"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Kill)
			calls := 0
			err = p.WaitReady(200*time.Millisecond, 10*time.Millisecond, func() error {
				calls++
				if c.okAfter >= 0 && calls > c.okAfter {
					return nil
				}
				return errNotYet
			})
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("WaitReady: %v, want nil", err)
			case c.want != "" && (err == nil || err.Error() != c.want || !errors.Is(err, errNotYet)):
				t.Fatalf("WaitReady: %v, want %q wrapping the last error", err, c.want)
			case c.want == "" && calls != c.okAfter+1:
				t.Errorf("ready called %d times, want %d", calls, c.okAfter+1)
			}
		})
	}
}

func TestHTTPStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	if err := HTTPStatus(srv.URL+"/v2/", http.StatusUnauthorized)(); err != nil {
		t.Errorf("the status wanted: %v", err)
	}
	if err := HTTPStatus(srv.URL+"/v2/", http.StatusOK)(); err == nil || !strings.Contains(err.Error(), "401 Unauthorized, want 200") {
		t.Errorf("another status: %v, want it named", err)
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	if err := HTTPStatus(closed.URL, http.StatusOK)(); err == nil {
		t.Error("nothing listening: no error")
	}
}
