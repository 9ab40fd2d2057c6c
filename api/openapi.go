package api

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/meshproof/meshproof/api/params"
)

// openAPISource is the API's contract but for the filter parameters: an
// operation marked "x-meshproof-filter": true takes them, and
// components.parameters gets one per parameter of package params' table,
// so that the document and the server never disagree on them.
//
//go:embed openapi.json
var openAPISource []byte

// openAPI is the API's contract, served at /openapi.json.
var openAPI = mustOpenAPI(openAPISource)

func mustOpenAPI(src []byte) []byte {
	b, err := buildOpenAPI(src)
	if err != nil {
		panic("api: openapi.json: " + err.Error())
	}
	return b
}

// filterMark marks an operation that takes the filter parameters.
const filterMark = "x-meshproof-filter"

// buildOpenAPI adds the filter parameters to the document src.
func buildOpenAPI(src []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	components, _ := doc["components"].(map[string]any)
	if components == nil {
		return nil, errors.New("no components")
	}
	defs, _ := components["parameters"].(map[string]any)
	if defs == nil {
		defs = map[string]any{}
		components["parameters"] = defs
	}
	refs := make([]any, 0, len(params.Table))
	for _, p := range params.Table {
		if _, ok := defs[p.Name]; ok {
			return nil, fmt.Errorf("components.parameters.%s: a filter parameter, which package params' table defines", p.Name)
		}
		defs[p.Name] = parameterObject(p)
		refs = append(refs, map[string]any{"$ref": "#/components/parameters/" + p.Name})
	}
	paths, _ := doc["paths"].(map[string]any)
	marked := 0
	for _, item := range paths {
		for _, op := range item.(map[string]any) {
			op, ok := op.(map[string]any)
			if !ok || op[filterMark] != true {
				continue
			}
			delete(op, filterMark)
			own, _ := op["parameters"].([]any)
			op["parameters"] = append(append([]any{}, refs...), own...)
			marked++
		}
	}
	if marked == 0 {
		return nil, errors.New("no operation takes the filter parameters (" + filterMark + ")")
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// timePattern is what since and until take: an RFC 3339 time, or a
// duration back from now (params.ParseAgo: days, then Go's units).
const timePattern = `^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})|(\d+d)?(0|((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)?)$`

// parameterObject is p as an OpenAPI query parameter.
func parameterObject(p params.Param) map[string]any {
	o := map[string]any{"name": p.Name, "in": "query", "description": p.Description()}
	switch p.Kind {
	case params.KindText:
		// maxLength counts characters, the server bytes (at most 2048):
		// the description says so.
		o["schema"] = map[string]any{"type": "string", "maxLength": 2048, "pattern": `^[^\x00]*$`}
		o["description"] = p.Description() + " (at most 2048 bytes)"
	case params.KindWorkload:
		o["schema"] = map[string]any{"type": "string", "maxLength": 2048, "pattern": `^[^/\x00]+/[^/\x00]+$`}
		o["description"] = p.Description() + " (at most 2048 bytes)"
	case params.KindTime:
		o["schema"] = map[string]any{"type": "string", "pattern": timePattern}
	case params.KindBool:
		o["schema"] = map[string]any{"type": "boolean"}
	case params.KindVerdicts:
		o["style"], o["explode"] = "form", true
		o["schema"] = map[string]any{"type": "array", "items": map[string]any{"$ref": "#/components/schemas/Verdict"}}
	}
	return o
}
