// Package crdcheck checks the generated CustomResourceDefinitions with the
// code kube-apiserver runs on them, without an API server: the CRDs must
// pass the apiextensions validation (structural schemas, CEL rules that
// compile within their cost budget, printer columns), every object in the
// docs must pass the schema and the CEL rules, and the objects in
// testdata/invalid.yaml must each be refused with the message they expect.
//
// Run: cd e2e/kube/crdcheck && go test ./...   (e2e/kube/chart_test.sh runs it)
package crdcheck

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// The repository's root, from e2e/kube/crdcheck.
const repo = "../../.."

type kind struct {
	crd        *apiextensions.CustomResourceDefinition
	structural *structuralschema.Structural
	schema     apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

func loadCRDs(t *testing.T) map[string]*kind {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repo, "charts/sluice/crds/*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no CRDs in charts/sluice/crds (%v)", err)
	}
	kinds := map[string]*kind{}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var v1 apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &v1); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&v1)
		var internal apiextensions.CustomResourceDefinition
		if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1, &internal, nil); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), &internal); len(errs) > 0 {
			t.Errorf("%s is not a valid CRD:\n%s", path, errs.ToAggregate())
			continue
		}
		// One version: the conversion keeps its schema in spec.validation.
		var openapi *apiextensions.JSONSchemaProps
		if internal.Spec.Validation != nil {
			openapi = internal.Spec.Validation.OpenAPIV3Schema
		} else if internal.Spec.Versions[0].Schema != nil {
			openapi = internal.Spec.Versions[0].Schema.OpenAPIV3Schema
		}
		if openapi == nil {
			t.Fatalf("%s: no schema", path)
		}
		structural, err := structuralschema.NewStructural(openapi)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		validator, _, err := apiservervalidation.NewSchemaValidator(openapi)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		kinds[internal.Spec.Names.Kind] = &kind{
			crd:        &internal,
			structural: structural,
			schema:     validator,
			cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
		}
	}
	return kinds
}

// validate returns what the API server would refuse in obj: unknown fields
// (kubectl's strict field validation), schema errors and CEL rule errors.
func validate(k *kind, obj map[string]interface{}) []string {
	var problems []string
	pruned := pruning.PruneWithOptions(obj, k.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, path := range pruned {
		problems = append(problems, "unknown field "+path)
	}
	var errs field.ErrorList
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, k.schema)...)
	celErrs, _ := k.cel.Validate(context.Background(), nil, k.structural, obj, nil, celconfig.RuntimeCELCostBudget)
	errs = append(errs, celErrs...)
	for _, err := range errs {
		problems = append(problems, err.Error())
	}
	return problems
}

// objects reads every YAML document with a kind from text.
func objects(text string) []map[string]interface{} {
	var out []map[string]interface{}
	for _, doc := range strings.Split("\n"+text, "\n---") {
		// As kubectl does: YAML (1.1, so an unquoted `on:` key is `true`)
		// to JSON, then JSON decoded with integers as int64.
		data, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			continue
		}
		var obj map[string]interface{}
		if err := utiljson.Unmarshal(data, &obj); err != nil || obj["kind"] == nil {
			continue
		}
		out = append(out, obj)
	}
	return out
}

func TestCRDsAreValid(t *testing.T) {
	kinds := loadCRDs(t)
	var names []string
	for name := range kinds {
		names = append(names, name)
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "AIGateway,Backend,Budget,MCPRoute" {
		t.Fatalf("kinds: %v", names)
	}
}

func TestDocsObjectsAreAccepted(t *testing.T) {
	kinds := loadCRDs(t)
	sources, _ := filepath.Glob(filepath.Join(repo, "docs/*.md"))
	sources = append(sources, filepath.Join(repo, "README.md"), "testdata/valid.yaml")
	checked := 0
	for _, source := range sources {
		data, err := os.ReadFile(source)
		if err != nil {
			t.Fatal(err)
		}
		blocks := []string{string(data)}
		if strings.HasSuffix(source, ".md") {
			blocks = nil
			for i, block := range strings.Split(string(data), "```yaml\n") {
				if i > 0 {
					blocks = append(blocks, strings.SplitN(block, "```", 2)[0])
				}
			}
		}
		for _, block := range blocks {
			for _, obj := range objects(block) {
				name, _ := obj["kind"].(string)
				if api, _ := obj["apiVersion"].(string); api == "v1" {
					continue // a core object of an example (a Secret)
				}
				k := kinds[name]
				if k == nil {
					t.Errorf("%s: unknown kind %q", source, name)
					continue
				}
				obj["apiVersion"] = "sluice.dev/v1alpha1"
				metadata, _ := obj["metadata"].(map[string]interface{})
				for _, problem := range validate(k, obj) {
					t.Errorf("%s: %s/%v: %s", source, name, metadata["name"], problem)
				}
				checked++
			}
		}
	}
	if checked < 12 {
		t.Errorf("only %d objects checked", checked)
	}
	t.Logf("%d objects accepted", checked)
}

func TestInvalidObjectsAreRefused(t *testing.T) {
	kinds := loadCRDs(t)
	data, err := os.ReadFile("testdata/invalid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := objects(string(data))
	if len(cases) < 10 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, obj := range cases {
		metadata, _ := obj["metadata"].(map[string]interface{})
		annotations, _ := metadata["annotations"].(map[string]interface{})
		expect, _ := annotations["expect"].(string)
		name := obj["kind"].(string) + "/" + metadata["name"].(string)
		if expect == "" {
			t.Errorf("%s: no `expect` annotation", name)
			continue
		}
		k := kinds[obj["kind"].(string)]
		if k == nil {
			t.Errorf("%s: no valid CRD for its kind", name)
			continue
		}
		problems := validate(k, obj)
		joined := strings.Join(problems, "\n")
		if !strings.Contains(joined, expect) {
			t.Errorf("%s: expected a refusal containing %q, got %q", name, expect, joined)
		}
	}
}
