package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/breakwater-registry/breakwater/config"
)

// TestOpenSharedTakesTheConfiguredStore: serve opens the driver the
// storage block configures, not s3 alone, and its log line says which
// store it is; without a block there is none.
func TestOpenSharedTakesTheConfiguredStore(t *testing.T) {
	// An Azure endpoint with nothing in it, so that nothing here leaves
	// the machine.
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("x-ms-error-code", "BlobNotFound")
		w.WriteHeader(http.StatusNotFound)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	obj, err := openShared(ctx, config.Storage{}, log)
	if obj != nil || err != nil || logs.Len() != 0 {
		t.Fatalf("no storage block: store %v, error %v, logged %q", obj, err, logs.String())
	}

	st := config.Storage{Azure: &config.Azure{
		AccountName: "breakwater", AccountKey: "YnJlYWt3YXRlcg==", Container: "fleet", ServiceURL: srv.URL,
		Credentials: config.AzureCredentials{Type: "shared_key"},
	}}
	obj, err = openShared(ctx, st, log)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Name() != "azure" {
		t.Errorf("store of driver %q, want azure", obj.Name())
	}
	mu.Lock()
	if len(asked) == 0 || !strings.HasPrefix(asked[0], "HEAD /fleet/") {
		t.Errorf("the store's endpoint was asked %q, want the container fleet first", asked)
	}
	mu.Unlock()
	var line struct{ Msg, Driver, Account, Container string }
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	if !strings.HasPrefix(line.Msg, "shared store") || line.Driver != "azure" || line.Account != "breakwater" || line.Container != "fleet" {
		t.Errorf("logged %q, want the shared store's driver azure, account breakwater, container fleet", logs.String())
	}

	// A secret's file that is not there stops serve, named by its key.
	st.Azure.AccountKey, st.Azure.AccountKeyFile = "", filepath.Join(t.TempDir(), "none")
	if _, err := openShared(ctx, st, log); err == nil || !strings.HasPrefix(err.Error(), "storage.azure.accountkey_file: open ") {
		t.Errorf("a missing accountkey_file: %v", err)
	}
}
