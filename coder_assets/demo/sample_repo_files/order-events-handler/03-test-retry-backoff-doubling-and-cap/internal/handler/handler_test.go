package handler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	ordersv1 "gitea.homelab.example/homelab/order-events-handler/proto/orders/v1"
)

// recordingPublisher fails the first failures publishes, then records the rest.
type recordingPublisher struct {
	failures int
	subjects []string
	payloads [][]byte
}

func (p *recordingPublisher) Publish(_ context.Context, subject string, data []byte) error {
	if p.failures > 0 {
		p.failures--
		return errors.New("nats: connection closed")
	}
	p.subjects = append(p.subjects, subject)
	p.payloads = append(p.payloads, data)
	return nil
}

func validOrder() *ordersv1.OrderCreated {
	return &ordersv1.OrderCreated{
		OrderId:    "ord-1001",
		CustomerId: "cus-42",
		Currency:   "EUR",
		Items: []*ordersv1.LineItem{
			{Sku: "KB-75", Quantity: 1, UnitPriceCents: 8900},
			{Sku: "USB-C-2M", Quantity: 2, UnitPriceCents: 1250},
		},
		TotalCents: 11400,
	}
}

func newTestHandler(pub Publisher) *Handler {
	h := New(pub, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.now = func() time.Time { return time.Date(2024, 2, 5, 9, 0, 0, 0, time.UTC) }
	return h
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(o *ordersv1.OrderCreated)
		wantErr bool
	}{
		{"valid order", func(*ordersv1.OrderCreated) {}, false},
		{"missing order id", func(o *ordersv1.OrderCreated) { o.OrderId = "" }, true},
		{"missing customer", func(o *ordersv1.OrderCreated) { o.CustomerId = "" }, true},
		{"no items", func(o *ordersv1.OrderCreated) { o.Items = nil }, true},
		{"zero quantity", func(o *ordersv1.OrderCreated) { o.Items[0].Quantity = 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			order := validOrder()
			tt.mutate(order)
			err := Validate(order)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() error = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidOrder) {
				t.Errorf("Validate() error = %v, want it to wrap ErrInvalidOrder", err)
			}
		})
	}
}

func TestHandlePublishesAcceptedOrder(t *testing.T) {
	pub := &recordingPublisher{}
	data, err := proto.Marshal(validOrder())
	if err != nil {
		t.Fatal(err)
	}
	if err := newTestHandler(pub).Handle(context.Background(), data); err != nil {
		t.Fatalf("Handle() error = %v", err)
	}
	if len(pub.subjects) != 1 || pub.subjects[0] != AcceptedSubject {
		t.Fatalf("published to %v, want [%s]", pub.subjects, AcceptedSubject)
	}
	var accepted ordersv1.OrderAccepted
	if err := proto.Unmarshal(pub.payloads[0], &accepted); err != nil {
		t.Fatal(err)
	}
	if accepted.GetOrderId() != "ord-1001" || accepted.GetTotalCents() != 11400 {
		t.Errorf("accepted = %v, want ord-1001 with 11400 cents", &accepted)
	}
}

func TestHandleRejectsUndecodablePayload(t *testing.T) {
	err := newTestHandler(&recordingPublisher{}).Handle(context.Background(), []byte{0xff, 0x01})
	if !errors.Is(err, ErrInvalidOrder) {
		t.Fatalf("Handle() error = %v, want ErrInvalidOrder", err)
	}
}

func TestRetryPolicyBackoff(t *testing.T) {
	p := RetryPolicy{Attempts: 5, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}
	tests := []struct {
		attempt int
		want    time.Duration
	}{
		{0, 0},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{10, time.Second},
	}
	for _, tt := range tests {
		if got := p.Backoff(tt.attempt); got != tt.want {
			t.Errorf("Backoff(%d) = %v, want %v", tt.attempt, got, tt.want)
		}
	}
}
