// Package depcheck checks which packages a package depends on, directly or
// not, so that the project's layering rules are tests rather than hopes.
package depcheck

import (
	"bytes"
	"fmt"
	"os/exec"
	"sort"
	"strings"
)

// Deps returns every package pkg depends on, directly or not, by import
// path, as the go command sees them (tests excluded).
func Deps(pkg string) ([]string, error) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list -deps %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	var deps []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && line != pkg {
			deps = append(deps, line)
		}
	}
	sort.Strings(deps)
	return deps, nil
}

// Forbidden returns the dependencies of pkg that match a rule: an import
// path, or a prefix ending in "/..." for a path and everything under it.
func Forbidden(pkg string, rules ...string) ([]string, error) {
	deps, err := Deps(pkg)
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, d := range deps {
		for _, r := range rules {
			if matches(d, r) {
				bad = append(bad, d)
				break
			}
		}
	}
	return bad, nil
}

func matches(path, rule string) bool {
	if prefix, ok := strings.CutSuffix(rule, "/..."); ok {
		return path == prefix || strings.HasPrefix(path, prefix+"/")
	}
	return path == rule
}
