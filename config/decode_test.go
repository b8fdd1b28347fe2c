package config

import (
	"reflect"
	"strings"
	"testing"
)

// The decoder's generic parts, on types of their own so that the tests do
// not change with Breakwater's configuration.

type knobs struct {
	A int    `yaml:"a"`
	B string `yaml:"b"`
	C int    `yaml:"c"`
}

func (knobs) removedKeys() map[string]string {
	return map[string]string{"old": "use a and b instead"}
}

type site struct {
	URL   string `yaml:"url"`
	Knobs *knobs `yaml:"knobs,inherit=knobs"`
}

type doc struct {
	Knobs knobs           `yaml:"knobs"`
	Sites map[string]site `yaml:"sites"`
	List  []knobs         `yaml:"list"`
	Names []string        `yaml:"names"`
}

func TestDecodeInherit(t *testing.T) {
	global := "knobs:\n  a: 1\n  b: global\n"
	sites := "sites:\n  x.example:\n    url: u\n    knobs:\n      b: own\n  y.example:\n    url: v\n"
	for name, text := range map[string]string{
		"global block first": global + sites,
		"global block last":  sites + global,
	} {
		t.Run(name, func(t *testing.T) {
			d := doc{Knobs: knobs{A: 9, B: "default", C: 3}}
			if _, err := decodeStrict([]byte(text), &d); err != nil {
				t.Fatal(err)
			}
			want := doc{
				Knobs: knobs{A: 1, B: "global", C: 3},
				Sites: map[string]site{
					"x.example": {URL: "u", Knobs: &knobs{A: 1, B: "own", C: 3}},
					"y.example": {URL: "v"},
				},
			}
			if !reflect.DeepEqual(d, want) {
				t.Errorf("got %+v %+v\nwant %+v %+v", d, d.Sites["x.example"].Knobs, want, want.Sites["x.example"].Knobs)
			}
		})
	}
}

func TestDecodeLines(t *testing.T) {
	text := "sites:\n  x.example:\n    url: u\n    knobs:\n      b: own\nknobs:\n  a: 1\n"
	var d doc
	lines, err := decodeStrict([]byte(text), &d)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"sites": 1, "sites.x.example": 2, "sites.x.example.url": 3,
		"sites.x.example.knobs": 4, "sites.x.example.knobs.b": 5,
		"knobs": 6, "knobs.a": 7,
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("lines %v, want %v", lines, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		text, want string
	}{
		{"knobs:\n  old: 1\n", "line 2: knobs.old: removed: use a and b instead"},
		{"sites:\n  x:\n    knobs:\n      old: 1\n", "line 4: sites.x.knobs.old: removed: use a and b instead"},
		{"knobs:\n  d: 1\n", "line 2: knobs.d: unknown key (known keys: a, b, c)"},
		// Inherited blocks are decoded after the rest, with their own lines.
		{"sites:\n  x:\n    knobs:\n      a: many\nknobs:\n  a: 1\n", `line 4: sites.x.knobs.a: "many" is not a whole number`},
		{"sites:\n  x:\n    knobs: [1]\n", "line 3: sites.x.knobs: want a mapping of keys"},
	} {
		var d doc
		_, err := decodeStrict([]byte(tc.text), &d)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: error %v, want %q", tc.text, err, tc.want)
		}
	}
}

// Lists replace the default whole; their elements are named path[i], with
// their lines.
func TestDecodeLists(t *testing.T) {
	text := "names: [a, b]\nlist:\n  - a: 1\n  - b: x\n    c: 2\n"
	d := doc{Names: []string{"default"}, List: []knobs{{A: 9}}}
	lines, err := decodeStrict([]byte(text), &d)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b"}; !reflect.DeepEqual(d.Names, want) {
		t.Errorf("names %v, want %v", d.Names, want)
	}
	if want := []knobs{{A: 1}, {B: "x", C: 2}}; !reflect.DeepEqual(d.List, want) {
		t.Errorf("list %+v, want %+v", d.List, want)
	}
	want := map[string]int{
		"names": 1, "names[0]": 1, "names[1]": 1,
		"list": 2, "list[0]": 3, "list[0].a": 3, "list[1]": 4, "list[1].b": 4, "list[1].c": 5,
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("lines %v, want %v", lines, want)
	}
	for _, tc := range []struct{ text, want string }{
		{"names: a\n", "line 1: names: want a list, e.g. [a, b]"},
		{"names:\n  - [a]\n", "line 2: names[0]: want a string"},
		{"list:\n  - a: 1\n  - d: 2\n", "line 3: list[1].d: unknown key (known keys: a, b, c)"},
		{"list:\n  - a: one\n", `line 2: list[0].a: "one" is not a whole number`},
	} {
		var d doc
		if _, err := decodeStrict([]byte(tc.text), &d); err == nil || err.Error() != tc.want {
			t.Errorf("%q: error %v, want %q", tc.text, err, tc.want)
		}
	}
}

// A tag that inherits from nowhere, or from a block of another type, is a
// bug in the types; it is refused rather than decoded into something else.
func TestDecodeInheritMisdeclared(t *testing.T) {
	type badPath struct {
		K *knobs `yaml:"k,inherit=nowhere"`
	}
	type badType struct {
		N string `yaml:"n"`
		K *knobs `yaml:"k,inherit=n"`
	}
	type notPointer struct {
		K knobs `yaml:"k,inherit=k"`
	}
	for name, v := range map[string]any{"path": &badPath{}, "type": &badType{}, "pointer": &notPointer{}} {
		if _, err := decodeStrict([]byte("k:\n  a: 1\n"), v); err == nil || !strings.Contains(err.Error(), "bug in config's field tags") {
			t.Errorf("%s: error %v", name, err)
		}
	}
}
