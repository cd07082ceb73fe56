// Command cert-manager-controller runs cert-manager's controllers for the
// tempcreds test harness (hack/install-cert-manager.sh builds it,
// hack/cert-manager.sh runs it).
//
// cert-manager's own main lives in the module
// github.com/cert-manager/cert-manager/controller-binary, which the Go module
// proxy does not serve; and the package that lists its default controllers
// (internal/apis/config/controller/v1alpha1) links the Venafi issuer, whose
// module github.com/Venafi/vcert/v5 the proxy refuses. So this is a small main
// of our own around the served packages: the same ContextFactory, the same
// registered controllers and the same default settings as upstream, with
// only the issuer types a machine without network can use.
//
// Linked in, and so run (each package registers itself in init):
//
//	issuers, clusterissuers            Issuer / ClusterIssuer readiness
//	certificates-*                     the six Certificate controllers
//	certificaterequests-approver       approves requests for cert-manager.io issuers
//	certificaterequests-issuer-selfsigned, certificaterequests-issuer-ca
//
// Left out: ACME (orders, challenges; it would reach for Let's Encrypt and DNS
// providers), Vault, Venafi, the ingress/gateway shims, the experimental
// CertificateSigningRequest controllers, leader election, and the metrics and
// profiling servers. An Issuer of a type left out never gets a Ready
// condition; the log says "issuer 'acme' not registered" (retried with backoff).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster (required)")
	clusterResourceNamespace := flag.String("cluster-resource-namespace", "kube-system",
		"namespace of the Secrets that ClusterIssuers refer to")
	healthAddr := flag.String("health-address", "127.0.0.1:9403",
		"host:port serving /livez, and /readyz once the informer caches are synced")
	workers := flag.Int("concurrent-workers", 5, "workers per controller")
	klog.InitFlags(nil) // -v and the other klog flags
	flag.Parse()
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "--kubeconfig is required")
		os.Exit(2)
	}

	logf.InitLogs()
	defer logf.FlushLogs()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")

	if err := run(ctx, *kubeconfig, *clusterResourceNamespace, *healthAddr, *workers); err != nil {
		logf.Log.Error(err, "controller failed")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, clusterResourceNamespace, healthAddr string, workers int) error {
	log := logf.FromContext(ctx)
	g, ctx := errgroup.WithContext(ctx)

	// The defaults of cert-manager's ControllerConfiguration
	// (internal/apis/config/controller/v1alpha1/defaults.go) for the options
	// the linked controllers read.
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace: clusterResourceNamespace,
		},
		CertificateOptions: controller.CertificateOptions{
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return err
	}
	cctx, err := factory.Build()
	if err != nil {
		return err
	}

	// Probes first, so a port clash fails before anything starts.
	var ready atomic.Bool
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", healthAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", healthAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "informer caches not synced yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx) //nolint:contextcheck // ctx is already done
	})

	// Construct every registered controller (this registers their informers),
	// then run them; as in cert-manager's own main.
	known := controller.Known()
	names := make([]string, 0, len(known))
	for name := range known {
		names = append(names, name)
	}
	slices.Sort(names)
	log.Info("starting controllers", "controllers", names, "clusterResourceNamespace", clusterResourceNamespace)
	for _, name := range names {
		c, err := known[name](factory)
		if err != nil {
			return fmt.Errorf("constructing controller %s: %w", name, err)
		}
		g.Go(func() error { return c.Run(workers, ctx) })
	}

	cctx.SharedInformerFactory.Start(ctx.Done())
	cctx.KubeSharedInformerFactory.Start(ctx.Done())
	cctx.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	g.Go(func() error {
		// WaitForCacheSync reports an unsynced informer only when stopped.
		cctx.KubeSharedInformerFactory.WaitForCacheSync(ctx.Done())
		cctx.SharedInformerFactory.WaitForCacheSync(ctx.Done())
		if ctx.Err() == nil {
			ready.Store(true)
			log.Info("informer caches synced; ready", "healthAddress", ln.Addr().String())
		}
		return nil
	})

	err = g.Wait()
	cctx.HTTP01ResourceMetadataInformersFactory.Shutdown()
	cctx.KubeSharedInformerFactory.Shutdown()
	cctx.SharedInformerFactory.Shutdown()
	return err
}
