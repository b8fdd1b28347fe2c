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

// decodeStrict decodes YAML into v, refusing keys v does not have. It walks
// the YAML node tree itself rather than relying on yaml's KnownFields so that
// every error names the key's full dotted path and its line.
func decodeStrict(b []byte, v any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil
	}
	return decodeNode(doc.Content[0], reflect.ValueOf(v).Elem(), "")
}

func decodeNode(n *yaml.Node, v reflect.Value, path string) error {
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
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return where("want a mapping of keys")
		}
		fields := map[string]reflect.Value{}
		var known []string
		for i := 0; i < v.NumField(); i++ {
			tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = v.Field(i)
			known = append(known, tag)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			f, ok := fields[key.Value]
			if !ok {
				return fmt.Errorf("line %d: %s: unknown key (known keys: %s)", key.Line, join(path, key.Value), strings.Join(known, ", "))
			}
			if err := decodeNode(val, f, join(path, key.Value)); err != nil {
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
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := decodeNode(val, elem, join(path, key.Value)); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(key.Value), elem)
		}
		v.Set(m)
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

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
