package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/breakwater-registry/breakwater/config"
	"github.com/breakwater-registry/breakwater/internal/testazurite"
	"github.com/breakwater-registry/breakwater/internal/testgcs"
	"github.com/breakwater-registry/breakwater/internal/tests3"
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

// TestOpenSharedFromTheConfigFile: a storage block as an operator writes
// it in the configuration file, for each object store the configuration
// takes, opens a store that answers at start (its log line is not the
// warning) and keeps what is put in it: s3 on MinIO, gcs on
// fake-gcs-server, azure on Azurite, with the secrets in files.
func TestOpenSharedFromTheConfigFile(t *testing.T) {
	for _, c := range []struct {
		kind, driver string // the block's key, the driver's own name
		block        func(t *testing.T, dir string) string
	}{
		{"s3", "s3aws", func(t *testing.T, dir string) string {
			s := tests3.Start(t)
			return fmt.Sprintf("  s3:\n    bucket: %s\n    region: %s\n    regionendpoint: %s\n    accesskey: %s\n    secretkey_file: %s\n    secure: false\n    forcepathstyle: true\n",
				s.Bucket, s.Region, s.Endpoint, s.AccessKey, writeFile(t, dir, "s3-secret", s.SecretKey+"\n"))
		}},
		{"gcs", "gcs", func(t *testing.T, dir string) string {
			p := testgcs.Start(t).DriverParameters("/fleet")
			return fmt.Sprintf("  gcs:\n    bucket: %s\n    keyfile: %s\n    rootdirectory: /fleet\n", p["bucket"], p["keyfile"])
		}},
		{"azure", "azure", func(t *testing.T, dir string) string {
			s := testazurite.Start(t)
			return fmt.Sprintf("  azure:\n    accountname: %s\n    accountkey_file: %s\n    container: %s\n    serviceurl: %s\n    rootdirectory: /fleet\n    credentials:\n      type: shared_key\n",
				testazurite.Account, writeFile(t, dir, "azure-key", testazurite.AccountKey+"\n"), s.Container, s.ServiceURL)
		}},
	} {
		t.Run(c.kind, func(t *testing.T) {
			dir := t.TempDir()
			file := writeConfig(t, "storage:\n"+c.block(t, dir))
			cfg, err := loadConfig(file, "", "", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			ctx := t.Context()
			obj, err := openShared(ctx, cfg.Storage, slog.New(slog.NewJSONHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			var line struct{ Level, Msg, Driver string }
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.Level != "INFO" || line.Msg != "shared store" || line.Driver != c.driver {
				t.Fatalf("logged %q, want the shared store answering, driver %s", logs.String(), c.driver)
			}
			blob := []byte("a layer, shared")
			dgst := digest.FromBytes(blob)
			if err := obj.PutBlob(ctx, dgst, bytes.NewReader(blob)); err != nil {
				t.Fatal(err)
			}
			if size, err := obj.StatBlob(ctx, dgst); err != nil || size != int64(len(blob)) {
				t.Errorf("StatBlob after PutBlob: %d, %v; want %d", size, err, len(blob))
			}
		})
	}
}
