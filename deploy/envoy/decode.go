// Package envoy holds meshproof's Envoy bootstraps (envoy.yaml, and
// envoy-strict.yaml for STRICT mode) and the strict decoder its tests use.
package envoy

import (
	"errors"
	"fmt"
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// Extensions are the typed_config types the bootstraps may use. The decoder
// resolves these and nothing else, so a typed_config of another type, or a
// misspelt type URL, fails to decode instead of passing unchecked.
var Extensions = []proto.Message{
	&tlsinspectorv3.TlsInspector{},
	&hcmv3.HttpConnectionManager{},
	&extauthzv3.ExtAuthz{},
	&routerv3.Router{},
	&tlsv3.DownstreamTlsContext{},
	&tlsv3.SPIFFECertValidatorConfig{},
	&filev3.FileAccessLog{},
	&upstreamhttpv3.HttpProtocolOptions{},
}

// Resolver knows exactly the Extensions.
func Resolver() *protoregistry.Types {
	var types protoregistry.Types
	for _, m := range Extensions {
		if err := types.RegisterMessage(m.ProtoReflect().Type()); err != nil {
			panic(err) // a duplicate in Extensions: a programming error
		}
	}
	return &types
}

// ReadBootstrap decodes the Envoy bootstrap in the YAML file at path.
func ReadBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return DecodeBootstrap(raw)
}

// DecodeBootstrap decodes an Envoy bootstrap as strictly as go-control-plane
// allows: duplicate YAML keys, unknown fields and unresolvable typed_config
// types are errors, and the protoc-gen-validate rules are checked on the
// bootstrap and, since they do not reach inside google.protobuf.Any, on every
// typed_config too.
func DecodeBootstrap(raw []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	resolver := Resolver()
	var b bootstrapv3.Bootstrap
	opts := protojson.UnmarshalOptions{DiscardUnknown: false, Resolver: resolver}
	if err := opts.Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	if err := validate(b.ProtoReflect(), resolver, "bootstrap"); err != nil {
		return nil, err
	}
	return &b, nil
}

// validator is what protoc-gen-validate generates on every Envoy message.
type validator interface{ ValidateAll() error }

// validate runs ValidateAll on m and on the message inside every Any below
// it, naming where a failure is.
func validate(m protoreflect.Message, resolver *protoregistry.Types, at string) error {
	if v, ok := m.Interface().(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
	}
	return walkAnys(m, at, func(a *anypb.Any, at string) error {
		inner, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{Resolver: resolver})
		if err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		return validate(inner.ProtoReflect(), resolver, at+"("+string(inner.ProtoReflect().Descriptor().FullName())+")")
	})
}

// walkAnys calls f on every Any directly below m (not inside another Any).
func walkAnys(m protoreflect.Message, at string, f func(*anypb.Any, string) error) error {
	var errs []error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := at + "." + string(fd.Name())
		visit := func(msg protoreflect.Message, name string) {
			if a, ok := msg.Interface().(*anypb.Any); ok {
				errs = append(errs, f(a, name))
				return
			}
			errs = append(errs, walkAnys(msg, name, f))
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message(), fmt.Sprintf("%s[%d]", name, i))
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(mv.Message(), fmt.Sprintf("%s[%v]", name, k.Interface()))
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			visit(v.Message(), name)
		}
		return true
	})
	return errors.Join(errs...)
}
