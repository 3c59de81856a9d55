// Command order-events-handler consumes order events from NATS, validates them
// and republishes accepted orders for the fulfilment services.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats.go"

	"gitea.homelab.example/homelab/order-events-handler/internal/handler"
)

const (
	defaultSubject = "orders.created"
	queueGroup     = "order-events-handler"
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

	nc, err := nats.Connect(url,
		nats.Name("order-events-handler"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(2*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("disconnected from NATS", "error", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logger.Info("reconnected to NATS", "url", c.ConnectedUrl())
		}),
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

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	<-ctx.Done()

	logger.Info("shutting down")
	nc.Close()
	return nil
}

// envOr returns the value of the environment variable key, or fallback when it
// is unset or empty.
func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
