"""The application: wiring the service, the command line, the HTTP server, status, check, the demo and SAM import."""
