module gitea.homelab.example/homelab/order-events-handler

go 1.22

require (
	github.com/nats-io/nats.go v1.36.0
	google.golang.org/protobuf v1.34.1
)

require (
	github.com/klauspost/compress v1.17.8 // indirect
	github.com/nats-io/nkeys v0.4.7 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.23.0 // indirect
	golang.org/x/sys v0.20.0 // indirect
)
