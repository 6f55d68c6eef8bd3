package tools

import (
	"encoding/json"
	"errors"
	"reflect"

	"github.com/google/jsonschema-go/jsonschema"

	authzv1 "github.com/mcpauthz/mcpauthz/gen/authz/v1"
)

// JSONObject is an already encoded JSON object placed into a tool's output as
// is. Its output schema is {"type": "object"}: a field of this type is a JSON
// object whose members the gateway does not know in advance, such as a token's
// claims.
type JSONObject []byte

// MarshalJSON returns o itself ({} when empty, so a value that is not omitted
// still matches the schema).
func (o JSONObject) MarshalJSON() ([]byte, error) {
	if len(o) == 0 {
		return []byte("{}"), nil
	}
	return o, nil
}

// UnmarshalJSON keeps a copy of b, so clients can decode the output into the
// same types.
func (o *JSONObject) UnmarshalJSON(b []byte) error {
	*o = append((*o)[:0], b...)
	return nil
}

// outputSchemaOptions is how define infers a tool's output schema from its
// output type: as the go-sdk would, plus the types above.
var outputSchemaOptions = &jsonschema.ForOptions{
	TypeSchemas: map[reflect.Type]*jsonschema.Schema{
		reflect.TypeFor[JSONObject](): {Type: "object"},
	},
}

// claimsJSON returns the principal's claims as a JSON object: claims_json as
// authz sent it (the gateway asks for CLAIMS_FORMAT_JSON), or, from an authz that
// predates that field and sent the Struct instead, that Struct encoded. Nil when
// the principal has no claims.
func claimsJSON(p *authzv1.Principal) (JSONObject, error) {
	if j := p.GetClaimsJson(); len(j) > 0 {
		// The rest of the validation is the output encoder's, which refuses
		// invalid JSON from MarshalJSON.
		if j[0] != '{' {
			return nil, errors.New("authz sent claims that are not a JSON object")
		}
		return JSONObject(j), nil
	}
	if s := p.GetClaims(); s != nil {
		j, err := json.Marshal(s.AsMap())
		return JSONObject(j), err
	}
	return nil, nil
}
