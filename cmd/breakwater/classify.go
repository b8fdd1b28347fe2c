package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"

	"github.com/breakwater-registry/breakwater/classify"
)

const classifyUsage = `Usage:
  breakwater classify --reason REASON --message MESSAGE [--json]
  kubectl get pod NAME -o json | breakwater classify [--json]
  kubectl get pods -o json | breakwater classify [--json]
  breakwater classify --rules

Decides whether a container waiting on an image pull will recover by itself
(transient), will never start (fatal), or cannot be judged (unknown), from
kubelet's waiting reason and message.

With --reason and/or --message, classifies that pair and prints one line:
  <verdict> rule=<rule> <explanation>

Otherwise reads a Pod, or a List of Pods, as JSON on stdin and prints one line
per waiting container (init, regular and ephemeral; containers that are not
waiting are left out):
  <namespace>/<pod> <container> <verdict> rule=<rule> <explanation>

--json prints one JSON object per line instead, with the fields namespace,
pod, container (absent for a single pair), reason, message, verdict, rule and
explanation.

Exit status:
  0  every container waiting on an image pull is transient
  1  at least one is fatal
  2  otherwise at least one is unknown, or none is waiting on an image pull
  3  bad input (flags, or stdin that is empty, unreadable or not a Pod or
     List), or stdout failed

Containers waiting for other reasons (ContainerCreating, PodInitializing,
CreateContainerConfigError...) are printed with rule=not-image-pull but do not
count towards the exit status, unless a single pair is classified.

Flags:
`

const (
	exitClassifyTransient = 0
	exitClassifyFatal     = 1
	exitClassifyUnknown   = 2
	exitClassifyBadInput  = 3
)

// maxClassifyInput bounds what is read from stdin. A PodList of a large
// cluster is tens of megabytes; anything past this is not kubectl output.
const maxClassifyInput = 256 << 20

// runClassify implements "breakwater classify"; args exclude the word
// "classify". It returns the exit status.
func runClassify(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return classifyMain(args, stdin, stdout, stderr, maxClassifyInput)
}

func classifyMain(args []string, stdin io.Reader, stdout, stderr io.Writer, maxInput int64) int {
	fs := flag.NewFlagSet("classify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), classifyUsage)
		fs.PrintDefaults()
	}
	reason := fs.String("reason", "", "kubelet's waiting `reason`, e.g. ErrImagePull")
	message := fs.String("message", "", "kubelet's waiting `message` (the runtime's error text)")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	listRules := fs.Bool("rules", false, "print the rule table in the order it is consulted, and exit")
	if wantsHelp(args) {
		printHelp(stdout, fs, classifyUsage)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitClassifyBadInput // the flag package has printed the error and usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "breakwater classify: unexpected argument %q; pass the pod as JSON on stdin or use --reason/--message\n", fs.Arg(0))
		return exitClassifyBadInput
	}
	if *listRules {
		printClassifyRules(stdout)
		return 0
	}

	out := &classifyOutput{w: stdout, json: *asJSON}
	pair := false
	fs.Visit(func(f *flag.Flag) { pair = pair || f.Name == "reason" || f.Name == "message" })
	if pair {
		r := classify.Classify(*reason, *message)
		if err := out.write(classifyRow{Reason: *reason, Message: *message}, r); err != nil {
			fmt.Fprintf(stderr, "breakwater classify: %v\n", err)
			return exitClassifyBadInput
		}
		return classifyExitFor(r.Verdict)
	}

	pods, err := readClassifyPods(stdin, maxInput)
	if err != nil {
		fmt.Fprintf(stderr, "breakwater classify: %v\n", err)
		return exitClassifyBadInput
	}
	var waiting, votes, fatal, unknown int
	for _, p := range pods {
		for _, c := range p.waiting() {
			waiting++
			r := classify.Classify(c.Reason, c.Message)
			if err := out.write(c, r); err != nil {
				fmt.Fprintf(stderr, "breakwater classify: %v\n", err)
				return exitClassifyBadInput
			}
			if r.Rule == classify.RuleNotImagePull {
				continue
			}
			votes++
			switch r.Verdict {
			case classify.Fatal:
				fatal++
			case classify.Unknown:
				unknown++
			}
		}
	}
	switch {
	case waiting == 0:
		fmt.Fprintf(stderr, "breakwater classify: no container is waiting (%d pod(s) read)\n", len(pods))
		return exitClassifyUnknown
	case votes == 0:
		fmt.Fprintf(stderr, "breakwater classify: no container is waiting on an image pull (%d waiting for other reasons)\n", waiting)
		return exitClassifyUnknown
	case fatal > 0:
		return exitClassifyFatal
	case unknown > 0:
		return exitClassifyUnknown
	}
	return exitClassifyTransient
}

func classifyExitFor(v classify.Verdict) int {
	switch v {
	case classify.Transient:
		return exitClassifyTransient
	case classify.Fatal:
		return exitClassifyFatal
	}
	return exitClassifyUnknown
}

func printClassifyRules(w io.Writer) {
	for _, r := range classify.Rules() {
		match := strings.Join(r.Patterns, " | ")
		if len(r.Reasons) > 0 {
			match = "reason " + strings.Join(r.Reasons, " | ")
		}
		fmt.Fprintf(w, "%-9s %-28s %s\n", r.Verdict, r.ID, match)
	}
}

// The few fields of a Pod, or of a List of them, that classify needs.
// kubectl prints a List for "get pods" and a Pod for "get pod NAME".
type classifyPod struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"metadata"`
	Status struct {
		InitContainerStatuses      []classifyContainerStatus `json:"initContainerStatuses"`
		ContainerStatuses          []classifyContainerStatus `json:"containerStatuses"`
		EphemeralContainerStatuses []classifyContainerStatus `json:"ephemeralContainerStatuses"`
	} `json:"status"`
	Items []classifyPod `json:"items"`
}

type classifyContainerStatus struct {
	Name  string `json:"name"`
	State struct {
		Waiting *struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"waiting"`
	} `json:"state"`
}

// classifyRow is one waiting container, and the JSON output's shape.
type classifyRow struct {
	Namespace   string           `json:"namespace,omitempty"`
	Pod         string           `json:"pod,omitempty"`
	Container   string           `json:"container,omitempty"`
	Reason      string           `json:"reason"`
	Message     string           `json:"message"`
	Verdict     classify.Verdict `json:"verdict"`
	Rule        string           `json:"rule"`
	Explanation string           `json:"explanation"`
}

func (p *classifyPod) waiting() []classifyRow {
	var rows []classifyRow
	for _, list := range [][]classifyContainerStatus{
		p.Status.InitContainerStatuses, p.Status.ContainerStatuses, p.Status.EphemeralContainerStatuses,
	} {
		for _, c := range list {
			if w := c.State.Waiting; w != nil {
				rows = append(rows, classifyRow{
					Namespace: p.Metadata.Namespace, Pod: p.Metadata.Name, Container: c.Name,
					Reason: w.Reason, Message: w.Message,
				})
			}
		}
	}
	return rows
}

var errClassifyInputTooLarge = errors.New("input too large")

// classifyCapReader fails, rather than ends, once more than limit bytes
// arrive, so that an oversized input is reported as such and not as
// truncated JSON; an input of exactly limit bytes still ends with io.EOF.
type classifyCapReader struct {
	r     io.Reader
	limit int64
	n     int64
}

func (c *classifyCapReader) Read(p []byte) (int, error) {
	if c.n > c.limit {
		return 0, errClassifyInputTooLarge
	}
	if room := c.limit - c.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		return 0, errClassifyInputTooLarge
	}
	return n, err
}

// readClassifyPods decodes every JSON value on stdin (kubectl prints one; several
// concatenated are accepted) and returns the Pods in them.
func readClassifyPods(stdin io.Reader, maxInput int64) ([]*classifyPod, error) {
	if stdin == nil {
		return nil, errors.New("no input: pipe in `kubectl get pod NAME -o json`, or use --reason/--message")
	}
	in := &classifyCapReader{r: stdin, limit: maxInput}
	dec := json.NewDecoder(in)
	var pods []*classifyPod
	for n := 0; ; n++ {
		var v classifyPod
		err := dec.Decode(&v)
		if err == io.EOF {
			if n == 0 {
				return nil, errors.New("no input on stdin: pipe in `kubectl get pod NAME -o json`, or use --reason/--message")
			}
			return pods, nil
		}
		if err != nil {
			return nil, describeClassifyJSONError(err, in.n, maxInput)
		}
		if v.Kind == "" && v.Items != nil {
			v.Kind = "List"
		}
		switch v.Kind {
		case "List", "PodList":
			for i := range v.Items {
				// kubectl get all -o json mixes in other kinds; they have no
				// containers to judge.
				if item := &v.Items[i]; item.Kind == "" || item.Kind == "Pod" {
					pods = append(pods, item)
				}
			}
		case "Pod":
			pods = append(pods, &v)
		case "":
			if v.Metadata.Name == "" && v.Status.ContainerStatuses == nil && v.Status.InitContainerStatuses == nil {
				return nil, errors.New("stdin: a JSON object that is not a Pod (no kind, metadata.name or status.containerStatuses)")
			}
			pods = append(pods, &v)
		default:
			return nil, fmt.Errorf("stdin: a %s, want a Pod or a List of Pods", quoteClassifyKind(v.Kind))
		}
	}
}

func describeClassifyJSONError(err error, read, maxInput int64) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, errClassifyInputTooLarge):
		size := fmt.Sprintf("%d bytes", maxInput)
		if maxInput%(1<<20) == 0 {
			size = fmt.Sprintf("%d MiB", maxInput>>20)
		}
		return fmt.Errorf("stdin: more than %s; that is not kubectl output", size)
	case errors.As(err, &syntax):
		return fmt.Errorf("stdin: invalid JSON at byte %d: %v", syntax.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("stdin: JSON ends early, after %d bytes (truncated input?)", read)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Errorf("stdin: a JSON %s, want an object (a Pod or a List of Pods)", typ.Value)
		}
		return fmt.Errorf("stdin: field %s holds a JSON %s, which a Pod does not have there", typ.Field, typ.Value)
	}
	return fmt.Errorf("reading stdin: %w", err)
}

type classifyOutput struct {
	w    io.Writer
	json bool
}

func (o *classifyOutput) write(row classifyRow, r classify.Result) error {
	row.Verdict, row.Rule, row.Explanation = r.Verdict, r.Rule, r.Reason
	if o.json {
		enc := json.NewEncoder(o.w)
		enc.SetEscapeHTML(false) // messages hold URLs with & in them
		return enc.Encode(row)
	}
	var b strings.Builder
	if row.Namespace != "" || row.Pod != "" || row.Container != "" {
		name := classifyField(row.Pod)
		if row.Namespace != "" {
			name = classifyField(row.Namespace) + "/" + name
		}
		b.WriteString(name + " " + classifyField(row.Container) + " ")
	}
	fmt.Fprintf(&b, "%s rule=%s %s\n", r.Verdict, r.Rule, r.Reason)
	_, err := io.WriteString(o.w, b.String())
	return err
}

// classifyField keeps a name from the input to one space-free token, so
// that a line splits on spaces whatever the input holds. Kubernetes names
// never need it; the quoted form is a Go string literal.
func classifyField(s string) string {
	if s == "" {
		return "-"
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' }) >= 0 {
		return strings.ReplaceAll(strconv.Quote(s), " ", `\x20`)
	}
	return s
}

func quoteClassifyKind(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(s)
}
