// Package istio holds meshproof's Istio configuration (the extension
// provider, the CUSTOM AuthorizationPolicy, PeerAuthentication and
// DestinationRule examples, and the EnvoyFilter that turns on the peer
// certificate) and decodes it strictly with istio.io/api's types.
package istio

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	"istio.io/api/networking/v1alpha3"
	securityv1 "istio.io/api/security/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Object is an Istio resource: Kubernetes' envelope around an istio.io/api
// message.
type Object struct {
	APIVersion string
	Kind       string
	Metadata   metav1.ObjectMeta
	Spec       proto.Message
}

// specs are the kinds this configuration may use, by apiVersion and kind.
var specs = map[string]func() proto.Message{
	"security.istio.io/v1 AuthorizationPolicy": func() proto.Message { return &securityv1.AuthorizationPolicy{} },
	"security.istio.io/v1 PeerAuthentication":  func() proto.Message { return &securityv1.PeerAuthentication{} },
	"networking.istio.io/v1 DestinationRule":   func() proto.Message { return &networkingv1.DestinationRule{} },
	"networking.istio.io/v1alpha3 EnvoyFilter": func() proto.Message { return &v1alpha3.EnvoyFilter{} },
}

// strictJSON converts YAML to JSON and decodes it into v, refusing
// duplicate keys and fields v does not have.
func strictJSON(doc []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// strictProto decodes JSON into m as the Istio CRDs' schemas would, with
// unknown fields rejected (their schemas do not preserve unknown fields).
func strictProto(js []byte, m proto.Message) error {
	return protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(js, m)
}

// DecodeObject decodes one YAML document holding an Istio resource.
func DecodeObject(doc []byte) (*Object, error) {
	var env struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
		Spec       json.RawMessage   `json:"spec"`
	}
	if err := strictJSON(doc, &env); err != nil {
		return nil, err
	}
	newSpec, ok := specs[env.APIVersion+" "+env.Kind]
	if !ok {
		return nil, fmt.Errorf("%s %s: not a kind this configuration uses", env.APIVersion, env.Kind)
	}
	o := &Object{APIVersion: env.APIVersion, Kind: env.Kind, Metadata: env.Metadata, Spec: newSpec()}
	if err := strictProto(env.Spec, o.Spec); err != nil {
		return nil, fmt.Errorf("%s %s/%s spec: %w", env.Kind, env.Metadata.Namespace, env.Metadata.Name, err)
	}
	return o, nil
}

// DecodeMeshConfigValues decodes an istiod Helm values file that holds only
// meshConfig into Istio's MeshConfig.
func DecodeMeshConfigValues(doc []byte) (*meshv1alpha1.MeshConfig, error) {
	var values struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	}
	if err := strictJSON(doc, &values); err != nil {
		return nil, err
	}
	if values.MeshConfig == nil {
		return nil, fmt.Errorf("no meshConfig")
	}
	var mc meshv1alpha1.MeshConfig
	if err := strictProto(values.MeshConfig, &mc); err != nil {
		return nil, fmt.Errorf("meshConfig: %w", err)
	}
	return &mc, nil
}
