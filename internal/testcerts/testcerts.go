// Package testcerts makes certificate authorities and the certificates
// they sign, for tests of TLS: servers for 127.0.0.1 and clients, in PEM
// as they would be in files. ECDSA P-256, valid for an hour either side
// of now.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA signs certificates.
type CA struct {
	Cert *x509.Certificate
	PEM  []byte // the CA's certificate, as a client or server trusts it
	key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// Pool is a pool holding the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Server returns a server certificate for 127.0.0.1 (an IP SAN) with the
// serial number given, and its key, both PEM.
func (ca *CA) Server(t testing.TB, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	return ca.issue(t, serial, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
}

// Client returns a client certificate with the serial number given, as
// a tls.Client's Certificates take it.
func (ca *CA) Client(t testing.TB, serial int64) tls.Certificate {
	t.Helper()
	c, k := ca.issue(t, serial, x509.ExtKeyUsageClientAuth, nil, nil)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// WriteServer writes a server certificate and its key into dir as tls.crt
// and tls.key (a Kubernetes TLS Secret's names) and returns their paths.
func (ca *CA) WriteServer(t testing.TB, dir string, serial int64) (certFile, keyFile string) {
	t.Helper()
	c, k := ca.Server(t, serial)
	return write(t, dir, "tls", c, k)
}

// WriteServerNamed is WriteServer for a certificate of the DNS name given
// and no IP address.
func (ca *CA) WriteServerNamed(t testing.TB, dir string, serial int64, name string) (certFile, keyFile string) {
	t.Helper()
	c, k := ca.issue(t, serial, x509.ExtKeyUsageServerAuth, nil, []string{name})
	return write(t, dir, "tls", c, k)
}

// WriteClient writes a client certificate and its key into dir as
// client.crt and client.key and returns their paths.
func (ca *CA) WriteClient(t testing.TB, dir string, serial int64) (certFile, keyFile string) {
	t.Helper()
	c, k := ca.issue(t, serial, x509.ExtKeyUsageClientAuth, nil, nil)
	return write(t, dir, "client", c, k)
}

// WriteCA writes the CA's certificate into dir as ca.crt and returns its
// path.
func (ca *CA) WriteCA(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func write(t testing.TB, dir, name string, c, k []byte) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	for p, b := range map[string][]byte{certFile: c, keyFile: k} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

func (ca *CA) issue(t testing.TB, serial int64, usage x509.ExtKeyUsage, ips []net.IP, names []string) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("leaf-%d", serial)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
		DNSNames:     names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
