// Command kstatus reads one object from the API server with client-go's
// dynamic client and prints what sigs.k8s.io/cli-utils' kstatus computes
// for it — the health verdict Flux, kpt and Argo-style tooling act on — as
// one line of JSON:
//
//	{"status":"Current","message":"Resource is Ready","conditions":[...],"generation":1,"observedGeneration":1}
//
// Usage:
//
//	kstatus --kubeconfig FILE (--gvr tenantdatabases.v1alpha1.tenantdb.io | --group G --version V --resource R) [--namespace NS] --name NAME
//
// Exit code 0 when the object was read and its status computed (whatever
// the status), 1 otherwise.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

type output struct {
	Status     string      `json:"status"`
	Message    string      `json:"message"`
	Conditions []condition `json:"conditions"`
	// What kstatus looked at, for a reader of a failing test.
	Generation         int64  `json:"generation"`
	ObservedGeneration *int64 `json:"observedGeneration"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file")
	gvrText := flag.String("gvr", "", "resource.version.group, e.g. tenantdatabases.v1alpha1.tenantdb.io (instead of --group/--version/--resource)")
	group := flag.String("group", "", "API group (empty for the core group)")
	version := flag.String("version", "", "API version")
	resource := flag.String("resource", "", "resource, plural (e.g. tenantdatabases)")
	namespace := flag.String("namespace", "", "namespace (empty for a cluster-scoped object)")
	name := flag.String("name", "", "object name")
	timeout := flag.Duration("timeout", 30*time.Second, "request timeout")
	flag.Parse()

	var gvr schema.GroupVersionResource
	if *gvrText != "" {
		parsed, _ := schema.ParseResourceArg(*gvrText)
		if parsed == nil {
			fail("--gvr %q: expected resource.version.group (resource.version for the core group: use --resource/--version)", *gvrText)
		}
		gvr = *parsed
	} else {
		gvr = schema.GroupVersionResource{Group: *group, Version: *version, Resource: *resource}
	}
	if gvr.Version == "" || gvr.Resource == "" || *name == "" {
		fail("need --name and a resource (--gvr, or --version and --resource)")
	}
	if *kubeconfig == "" {
		fail("need --kubeconfig (or KUBECONFIG)")
	}

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail("%s: %v", *kubeconfig, err)
	}
	config.UserAgent = "tenantdb-tests-kstatus"
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var obj *unstructured.Unstructured
	if *namespace != "" {
		obj, err = client.Resource(gvr).Namespace(*namespace).Get(ctx, *name, metav1.GetOptions{})
	} else {
		obj, err = client.Resource(gvr).Get(ctx, *name, metav1.GetOptions{})
	}
	if err != nil {
		fail("get %s %s/%s: %v", gvr.String(), *namespace, *name, err)
	}

	result, err := status.Compute(obj)
	if err != nil {
		fail("computing the status of %s/%s: %v", *namespace, *name, err)
	}
	out := output{
		Status:     result.Status.String(),
		Message:    result.Message,
		Conditions: []condition{},
		Generation: obj.GetGeneration(),
	}
	for _, c := range result.Conditions {
		out.Conditions = append(out.Conditions, condition{
			Type:    c.Type.String(),
			Status:  string(c.Status),
			Reason:  c.Reason,
			Message: c.Message,
		})
	}
	if observed, found, _ := unstructured.NestedInt64(obj.Object, "status", "observedGeneration"); found {
		out.ObservedGeneration = &observed
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}
