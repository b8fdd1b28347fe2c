package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and revision are stamped at build time by make build and make
// image:
//
//	-ldflags "-X main.version=0.1.0 -X main.revision=9f0e88a1b2c3"
//
// Without them they come from the binary's build information: the module
// version that `go install …@v0.1.0` records, the VCS revision a plain
// `go build` in a checkout records (unless -buildvcs=false).
var version, revision string

// buildVersion is the version Breakwater was built as: a release such as
// 0.1.0, or "dev" for a build nothing stamped.
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// buildRevision is the commit Breakwater was built from, "" when unknown.
func buildRevision() string {
	if revision != "" {
		return revision
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-dirty"
			}
		}
	}
	if rev == "" {
		return ""
	}
	return rev + modified
}

// stamp is what `breakwater version` prints after the name.
func stamp() string {
	if rev := buildRevision(); rev != "" {
		return fmt.Sprintf("%s (revision %s, %s)", buildVersion(), rev, runtime.Version())
	}
	return fmt.Sprintf("%s (%s)", buildVersion(), runtime.Version())
}
