// Command breakwater is a pull-through mirror for OCI container registries.
//
//	breakwater serve [--config FILE] [--listen ADDR] [--cache-dir DIR] [--upstream HOST=URL]...
//	breakwater classify [--reason R --message M | < pod.json] [--json]
//	breakwater watch [--kubeconfig FILE] [--namespace NS] [--end-after N] [--listen ADDR]
//	breakwater check [--config FILE | --mirror URL [--user USER]] [--json] IMAGE...
//	breakwater warm [--mirror URL] [--user USER] [--file LIST] [--platform P]... IMAGE...
//	breakwater containerd-config --mirror URL [--config FILE] [--dir DIR]
//	breakwater docker-config --mirror URL [--file FILE]
//	breakwater registries-conf --mirror URL [--config FILE] [--file FILE]
//	breakwater version
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `Breakwater: a pull-through mirror for OCI container registries.

Usage:
  breakwater serve [--config FILE] [--listen ADDR] [--cache-dir DIR] [--upstream HOST=URL]... [--tag-ttl DURATION] [--debug-listen ADDR] [--advertise URL]
  breakwater classify [--reason REASON --message MESSAGE | < pod.json] [--json]
  breakwater watch [--kubeconfig FILE] [--namespace NS] [--end-after N] [--listen ADDR]
  breakwater check [--config FILE | --mirror URL [--user USER [--password-file FILE]]] [--json] IMAGE...
  breakwater warm [--mirror URL] [--user USER [--password-file FILE]] [--file LIST] [--platform OS/ARCH[/VARIANT]]... IMAGE...
  breakwater containerd-config --mirror URL [--config FILE] [--dir DIR]
  breakwater docker-config --mirror URL [--file FILE]
  breakwater registries-conf --mirror URL [--config FILE] [--file FILE]
  breakwater version

Run "breakwater COMMAND --help" for a command's flags.
`

// wantsHelp reports -h, -help or --help among a command's arguments, before
// any "--": the command then prints its usage on stdout and exits 0,
// whatever else is on the line.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "-h=true", "--help=true":
			return true
		}
	}
	return false
}

// printHelp prints a command's usage and flags on w.
func printHelp(w io.Writer, fs *flag.FlagSet, usage string) {
	fs.SetOutput(w)
	fmt.Fprintln(w, strings.TrimRight(usage, "\n"))
	fs.PrintDefaults()
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:], stdout, stderr)
	case "check":
		return runCheck(args[1:], stdout, stderr)
	case "warm":
		return runWarm(args[1:], stdout, stderr)
	case "classify":
		return runClassify(args[1:], stdin, stdout, stderr)
	case "watch":
		return runWatch(args[1:], stdout, stderr)
	case "containerd-config":
		return runContainerdConfig(args[1:], stdout, stderr)
	case "docker-config":
		return runDockerConfig(args[1:], stdout, stderr)
	case "registries-conf":
		return runRegistriesConf(args[1:], stdout, stderr)
	case "version", "--version":
		if len(args) > 1 {
			if wantsHelp(args[1:]) {
				fmt.Fprintln(stdout, "usage: breakwater version\n\nPrints the version Breakwater was built as.")
				return 0
			}
			fmt.Fprintf(stderr, "version: unexpected arguments: %s\n", strings.Join(args[1:], " "))
			return 2
		}
		fmt.Fprintf(stdout, "breakwater %s\n", stamp())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "breakwater: unknown command %q\n\n%s", args[0], usage)
	return 2
}
