package tools

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
)

func TestClaimsJSON(t *testing.T) {
	t.Parallel()
	st, err := structpb.NewStruct(map[string]any{"sub": "u", "active": true, "n": 1.5})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		p       *authzv1.Principal
		want    string
		wantErr bool
	}{
		{"JSON as authz sent it", &authzv1.Principal{ClaimsJson: []byte(`{"sub":"u"}`)}, `{"sub":"u"}`, false},
		{"JSON preferred over a Struct", &authzv1.Principal{ClaimsJson: []byte(`{"a":1}`), Claims: st}, `{"a":1}`, false},
		{"Struct from an older authz", &authzv1.Principal{Claims: st}, `{"active":true,"n":1.5,"sub":"u"}`, false},
		{"no claims", &authzv1.Principal{}, ``, false},
		{"JSON that is not an object", &authzv1.Principal{ClaimsJson: []byte(`["sub"]`)}, ``, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := claimsJSON(tt.p)
			if (err != nil) != tt.wantErr {
				t.Fatalf("claimsJSON error = %v, want error %v", err, tt.wantErr)
			}
			if string(got) != tt.want {
				t.Errorf("claimsJSON = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestJSONObjectInOutput: a JSONObject is written as the object itself, {} when
// empty, and an invalid one is refused by the encoder rather than sent.
func TestJSONObjectInOutput(t *testing.T) {
	t.Parallel()
	type out struct {
		C JSONObject `json:"c"`
	}
	for _, tt := range []struct {
		in      JSONObject
		want    string
		wantErr bool
	}{
		{JSONObject(`{"a":[1,2]}`), `{"c":{"a":[1,2]}}`, false},
		{nil, `{"c":{}}`, false},
		{JSONObject(`{"a":`), ``, true},
	} {
		b, err := json.Marshal(out{tt.in})
		if (err != nil) != tt.wantErr || string(b) != tt.want {
			t.Errorf("Marshal(%s) = %s, %v; want %s (error %v)", tt.in, b, err, tt.want, tt.wantErr)
		}
	}
	var back out
	if err := json.Unmarshal([]byte(`{"c":{"x":true}}`), &back); err != nil || string(back.C) != `{"x":true}` {
		t.Errorf("Unmarshal = %s, %v", back.C, err)
	}
}
