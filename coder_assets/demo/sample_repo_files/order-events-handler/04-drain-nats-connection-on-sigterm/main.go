// Command order-events-handler consumes order events from NATS, validates them
// and republishes accepted orders for the fulfilment services.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"gitea.homelab.example/homelab/order-events-handler/internal/handler"
)

const (
	defaultSubject = "orders.created"
	queueGroup     = "order-events-handler"
	drainTimeout   = 10 * time.Second
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	if err := run(logger); err != nil {
		logger.Error("order-events-handler stopped", "error", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger) error {
	url := envOr("NATS_URL", nats.DefaultURL)
	subject := envOr("ORDERS_SUBJECT", defaultSubject)

	closed := make(chan struct{})
	nc, err := nats.Connect(url,
		nats.Name("order-events-handler"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(2*time.Second),
		nats.DrainTimeout(drainTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("disconnected from NATS", "error", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logger.Info("reconnected to NATS", "url", c.ConnectedUrl())
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
	)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", url, err)
	}

	h := handler.New(handler.NewNATSPublisher(nc), logger)
	sub, err := nc.QueueSubscribe(subject, queueGroup, h.HandleMsg)
	if err != nil {
		nc.Close()
		return fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	logger.Info("listening for orders", "subject", sub.Subject, "queue", queueGroup)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()

	// Drain rather than Close so that orders already received are republished
	// before the pod goes away; Kubernetes sends SIGTERM well before SIGKILL.
	logger.Info("shutdown requested, draining NATS connection")
	if err := nc.Drain(); err != nil {
		return fmt.Errorf("drain NATS connection: %w", err)
	}
	select {
	case <-closed:
		logger.Info("drained, exiting")
		return nil
	case <-time.After(drainTimeout + time.Second):
		return errors.New("timed out waiting for the NATS connection to drain")
	}
}

// envOr returns the value of the environment variable key, or fallback when it
// is unset or empty.
func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
