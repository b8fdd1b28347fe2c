package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// scalarSetter is a field type that parses itself from a YAML scalar.
type scalarSetter interface {
	setScalar(string) error
}

// keysRemover is a struct type that once had keys it no longer has. An old
// file that still sets one is refused with the key's hint (what replaces it)
// rather than "unknown key", so whoever upgrades learns what to write.
type keysRemover interface {
	removedKeys() map[string]string
}

// decodeStrict decodes YAML into v, refusing keys v does not have. It walks
// the YAML node tree itself rather than relying on yaml's KnownFields so that
// every error names the key's full dotted path and its line. It returns the
// line of every key the file has, by dotted path, so that errors found later
// (validation) can point into the file too.
//
// A pointer-to-struct field tagged `yaml:"name,inherit=some.path"` is filled
// after the whole document: with a copy of the value at some.path (dotted
// yaml keys from v's top), and the field's own keys decoded over it. So an
// override block inherits what the file says elsewhere, whichever of the two
// blocks comes first in the file.
func decodeStrict(b []byte, v any) (map[string]int, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	d := &decoder{root: reflect.ValueOf(v).Elem(), lines: map[string]int{}}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return d.lines, nil
	}
	if err := d.decodeNode(doc.Content[0], d.root, ""); err != nil {
		return nil, err
	}
	// An inheriting block may itself hold one, appended while this runs.
	for i := 0; i < len(d.inherits); i++ {
		in := d.inherits[i]
		base, err := lookup(d.root, in.from)
		if err != nil || base.Type() != in.into.Type() {
			return nil, fmt.Errorf("%s: cannot inherit from %s (%v): a bug in config's field tags", in.path, in.from, err)
		}
		in.into.Set(base)
		if err := d.decodeNode(in.node, in.into, in.path); err != nil {
			return nil, err
		}
	}
	return d.lines, nil
}

type decoder struct {
	root     reflect.Value
	lines    map[string]int
	inherits []inherit
}

// inherit is a block left for after the first pass: node is decoded into
// into, a struct that starts as a copy of the one at from.
type inherit struct {
	node *yaml.Node
	into reflect.Value
	path string
	from string
}

// lookup finds the field at a dotted path of yaml keys through structs.
func lookup(v reflect.Value, path string) (reflect.Value, error) {
	for _, key := range strings.Split(path, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, fmt.Errorf("%s is not a struct", v.Type())
		}
		found := false
		for i := 0; i < v.NumField(); i++ {
			if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name == key {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			return reflect.Value{}, fmt.Errorf("no key %q", key)
		}
	}
	return v, nil
}

func (d *decoder) decodeNode(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	where := func(format string, args ...any) error {
		name := path
		if name == "" {
			name = "(top level)"
		}
		return fmt.Errorf("line %d: %s: %s", n.Line, name, fmt.Sprintf(format, args...))
	}
	if s, ok := v.Addr().Interface().(scalarSetter); ok {
		if n.Kind != yaml.ScalarNode {
			return where("want a single value")
		}
		if err := s.setScalar(n.Value); err != nil {
			return where("%v", err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		// A block or value that may be absent: set, it is allocated and
		// decoded like the value itself.
		p := reflect.New(v.Type().Elem())
		if err := d.decodeNode(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return where("want a mapping of keys")
		}
		type field struct {
			v    reflect.Value
			from string // inherit= of the tag
		}
		fields := map[string]field{}
		var known []string
		for i := 0; i < v.NumField(); i++ {
			name, opts, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			f := field{v: v.Field(i)}
			if from, ok := strings.CutPrefix(opts, "inherit="); ok {
				f.from = from
			}
			fields[name] = f
			known = append(known, name)
		}
		var removed map[string]string
		if r, ok := v.Addr().Interface().(keysRemover); ok {
			removed = r.removedKeys()
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := join(path, key.Value)
			f, ok := fields[key.Value]
			if !ok {
				if hint, gone := removed[key.Value]; gone {
					return fmt.Errorf("line %d: %s: removed: %s", key.Line, p, hint)
				}
				return fmt.Errorf("line %d: %s: unknown key (known keys: %s)", key.Line, p, strings.Join(known, ", "))
			}
			d.lines[p] = key.Line
			if f.from != "" {
				if err := d.deferInherit(val, f.v, p, f.from); err != nil {
					return err
				}
				continue
			}
			if err := d.decodeNode(val, f.v, p); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return where("want a mapping of keys")
		}
		// A map in the file replaces the default map whole: listing some
		// upstreams means "these", not "these as well".
		m := reflect.MakeMap(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := join(path, key.Value)
			d.lines[p] = key.Line
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := d.decodeNode(val, elem, p); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(key.Value), elem)
		}
		v.Set(m)
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return where("want a list, e.g. [a, b]")
		}
		// Like a map, a list in the file replaces the default one whole.
		// Its elements are named path[i], their lines kept like keys'.
		l := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, el := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = el.Line
			if err := d.decodeNode(el, l.Index(i), p); err != nil {
				return err
			}
		}
		v.Set(l)
		return nil
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return where("want a string")
		}
		v.SetString(n.Value)
		return nil
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode {
			return where("want true or false")
		}
		b, err := strconv.ParseBool(n.Value)
		if err != nil {
			return where("%q is not true or false", n.Value)
		}
		v.SetBool(b)
		return nil
	case reflect.Int, reflect.Int64:
		if n.Kind != yaml.ScalarNode {
			return where("want a number")
		}
		i, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil {
			return where("%q is not a whole number", n.Value)
		}
		v.SetInt(i)
		return nil
	}
	return where("unsupported field type %s", v.Type())
}

// deferInherit points the field at a fresh struct now and fills it after
// the first pass. The pointer, not the struct, is what a map element copies
// when it is stored, so filling it later reaches the map's copy too.
func (d *decoder) deferInherit(n *yaml.Node, v reflect.Value, path, from string) error {
	if v.Kind() != reflect.Pointer || v.Type().Elem().Kind() != reflect.Struct {
		return fmt.Errorf("%s: inherit= wants a pointer to a struct, not %s: a bug in config's field tags", path, v.Type())
	}
	p := reflect.New(v.Type().Elem())
	v.Set(p)
	d.inherits = append(d.inherits, inherit{node: n, into: p.Elem(), path: path, from: from})
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
