// Package handler validates order events received over NATS and republishes
// accepted orders for the fulfilment services.
package handler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ordersv1 "gitea.homelab.example/homelab/order-events-handler/proto/orders/v1"
)

// AcceptedSubject is the subject that validated orders are republished on.
const AcceptedSubject = "orders.accepted"

// handleTimeout bounds the work done for a single message, retries included.
const handleTimeout = 5 * time.Second

// ErrInvalidOrder is wrapped by every validation failure so that callers can
// tell bad input apart from transport errors.
var ErrInvalidOrder = errors.New("invalid order")

// Publisher sends an encoded payload to a NATS subject.
type Publisher interface {
	Publish(ctx context.Context, subject string, data []byte) error
}

// Handler validates order events and republishes the accepted ones.
type Handler struct {
	pub    Publisher
	logger *slog.Logger
	now    func() time.Time
}

// New returns a Handler that republishes accepted orders through pub.
func New(pub Publisher, logger *slog.Logger) *Handler {
	return &Handler{
		pub:    pub,
		logger: logger,
		now:    time.Now,
	}
}

// HandleMsg adapts Handle to a nats.MsgHandler. Rejected orders are logged and
// dropped: replaying them would fail the same way.
func (h *Handler) HandleMsg(msg *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), handleTimeout)
	defer cancel()
	if err := h.Handle(ctx, msg.Data); err != nil {
		h.logger.Error("order event rejected", "subject", msg.Subject, "error", err)
	}
}

// Handle decodes one OrderCreated event, validates it and publishes an
// OrderAccepted event on AcceptedSubject.
func (h *Handler) Handle(ctx context.Context, data []byte) error {
	var order ordersv1.OrderCreated
	if err := proto.Unmarshal(data, &order); err != nil {
		return fmt.Errorf("%w: decode: %v", ErrInvalidOrder, err)
	}
	if err := Validate(&order); err != nil {
		return err
	}
	accepted := &ordersv1.OrderAccepted{
		OrderId:    order.GetOrderId(),
		TotalCents: order.GetTotalCents(),
		AcceptedAt: timestamppb.New(h.now()),
	}
	payload, err := proto.Marshal(accepted)
	if err != nil {
		return fmt.Errorf("encode accepted order %s: %w", order.GetOrderId(), err)
	}
	return h.pub.Publish(ctx, AcceptedSubject, payload)
}

// Validate reports whether order carries everything fulfilment needs. Every
// error it returns wraps ErrInvalidOrder.
func Validate(order *ordersv1.OrderCreated) error {
	switch {
	case order.GetOrderId() == "":
		return fmt.Errorf("%w: missing order_id", ErrInvalidOrder)
	case order.GetCustomerId() == "":
		return fmt.Errorf("%w: order %s has no customer_id", ErrInvalidOrder, order.GetOrderId())
	case len(order.GetItems()) == 0:
		return fmt.Errorf("%w: order %s has no items", ErrInvalidOrder, order.GetOrderId())
	}
	for i, item := range order.GetItems() {
		if item.GetQuantity() <= 0 {
			return fmt.Errorf("%w: order %s item %d has quantity %d",
				ErrInvalidOrder, order.GetOrderId(), i, item.GetQuantity())
		}
	}
	return nil
}

// TotalCents returns the sum of quantity times unit price over items.
func TotalCents(items []*ordersv1.LineItem) int64 {
	var total int64
	for _, item := range items {
		total += int64(item.GetQuantity()) * item.GetUnitPriceCents()
	}
	return total
}

// NATSPublisher publishes through a core NATS connection.
type NATSPublisher struct {
	nc *nats.Conn
}

// NewNATSPublisher wraps nc as a Publisher.
func NewNATSPublisher(nc *nats.Conn) *NATSPublisher {
	return &NATSPublisher{nc: nc}
}

// Publish sends data on subject. Core NATS publishes are fire-and-forget, so
// ctx is only checked before sending.
func (p *NATSPublisher) Publish(ctx context.Context, subject string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return p.nc.Publish(subject, data)
}
