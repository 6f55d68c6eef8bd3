package envconf

import (
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"
)

// LogValue renders the variables cfg declares (a struct or a pointer to one)
// with their values, for the start-up log line: a secret shows only whether
// it is set ([Mask]) and a Redis URL has its password hidden ([MaskURL]).
// Values are what Load left in the fields, so a default derived by the
// service's own Load shows as derived.
func LogValue(cfg any) slog.Value {
	rv := reflect.ValueOf(cfg)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	fs := fields(rv.Type())
	attrs := make([]slog.Attr, 0, len(fs))
	for _, f := range fs {
		attrs = append(attrs, slog.Attr{Key: f.Name, Value: f.logValue(rv.FieldByIndex(f.index))})
	}
	return slog.GroupValue(attrs...)
}

func (f field) logValue(v reflect.Value) slog.Value {
	switch {
	case f.Secret:
		return slog.StringValue(Mask(fmt.Sprint(v.Interface())))
	case f.check == "redisurl":
		if s := v.String(); s != "" {
			return slog.StringValue(MaskURL(s))
		}
		return slog.StringValue("")
	case f.typ == durationType:
		return slog.StringValue(time.Duration(v.Int()).String())
	case f.typ == levelType:
		return slog.StringValue(slog.Level(v.Int()).String())
	case f.typ == listType:
		sep := ","
		if f.check == "scopes" {
			sep = " "
		}
		return slog.StringValue(strings.Join(v.Interface().([]string), sep))
	case f.typ.Kind() == reflect.Bool:
		return slog.BoolValue(v.Bool())
	case f.typ.Kind() == reflect.Int:
		return slog.IntValue(int(v.Int()))
	}
	return slog.StringValue(v.String())
}
