package ec2

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// The answers' XML is written by a small encoder of its own: encoding/xml looks up
// every field's tag for every element it writes, which made a DescribeImages of 1,000
// images cost more than kiln's own API call (BenchmarkEC2DescribeImages1k). This one
// works out each answer type's fields once. It takes what the answer types use:
// structs (embedded ones flattened), pointers (nil: nothing), slices (one element per
// item), strings, booleans and integers, with encoding/xml's tag syntax (name and
// omitempty), and escapes text as encoding/xml does.

// xmlField is one field of a struct as its element.
type xmlField struct {
	name      string
	index     []int
	omitEmpty bool
}

var xmlPlans sync.Map // reflect.Type → []xmlField

// plan is the fields of struct type t in order, embedded structs' in their place.
func plan(t reflect.Type) []xmlField {
	if p, ok := xmlPlans.Load(t); ok {
		return p.([]xmlField)
	}
	var fields []xmlField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("xml")
		if f.Anonymous && tag == "" {
			for _, sub := range plan(f.Type) {
				sub.index = append([]int{i}, sub.index...)
				fields = append(fields, sub)
			}
			continue
		}
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		fields = append(fields, xmlField{name: name, index: []int{i}, omitEmpty: opts == "omitempty"})
	}
	xmlPlans.Store(t, fields)
	return fields
}

// encodeAnswer writes an answer document: the XML header, then v's fields inside
// <root xmlns=…>.
func encodeAnswer(b *bytes.Buffer, root string, v any) error {
	b.WriteString(xml.Header)
	b.WriteString("<" + root + ` xmlns="` + Namespace + `">`)
	if err := encodeFields(b, reflect.Indirect(reflect.ValueOf(v))); err != nil {
		return err
	}
	b.WriteString("</" + root + ">")
	return nil
}

func encodeFields(b *bytes.Buffer, v reflect.Value) error {
	for _, f := range plan(v.Type()) {
		fv := v.FieldByIndex(f.index)
		if f.omitEmpty && fv.IsZero() {
			continue
		}
		if err := encodeElement(b, f.name, fv); err != nil {
			return err
		}
	}
	return nil
}

func encodeElement(b *bytes.Buffer, name string, v reflect.Value) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return encodeElement(b, name, v.Elem())
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if err := encodeElement(b, name, v.Index(i)); err != nil {
				return err
			}
		}
		return nil
	}
	b.WriteString("<" + name + ">")
	switch v.Kind() {
	case reflect.Struct:
		if err := encodeFields(b, v); err != nil {
			return err
		}
	case reflect.String:
		xml.EscapeText(b, []byte(v.String()))
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	default:
		return fmt.Errorf("xml: %s of kind %s", name, v.Kind())
	}
	b.WriteString("</" + name + ">")
	return nil
}
