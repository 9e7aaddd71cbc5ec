package hsm

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// awsConfig is a parsed awskms: URI:
//
//	awskms:///alias/sidecrypt?region=eu-west-1&endpoint=https://vpce-...
//
// The path is the alias prefix: KEK version N is the KMS key that alias
// "<prefix>-vN" names, and the record MAC, audit MAC and backup signing
// keys are "<prefix>-records", "<prefix>-audit" and
// "<prefix>-backup-signing". It holds no secret: credentials come from the
// standard AWS chain (environment, shared files, web identity, container
// or instance role), never from the URI or a flag.
type awsConfig struct {
	Alias    string // "alias/sidecrypt"
	Region   string // empty: from the AWS chain (AWS_REGION, shared config)
	Endpoint string // empty: the region's public KMS endpoint
}

// awsAliasSuffixMax is the longest suffix sidecrypt appends to the alias
// prefix ("-backup-signing"); KMS alias names are at most 256 bytes.
const awsAliasSuffixMax = len("-backup-signing")

func awsConfigErr(format string, args ...any) error {
	return fmt.Errorf("hsm: awskms URI: %s: %w", fmt.Sprintf(format, args...), ErrConfig)
}

// parseAWSKMSURI parses an awskms: URI. Like the pkcs11: parser it refuses
// what it does not know rather than ignoring it.
func parseAWSKMSURI(s string) (awsConfig, error) {
	u, err := url.Parse(s)
	if err != nil {
		return awsConfig{}, awsConfigErr("not a URI: %v", err)
	}
	switch {
	case !strings.EqualFold(u.Scheme, "awskms"):
		return awsConfig{}, awsConfigErr("must start with awskms:")
	case u.Opaque != "":
		return awsConfig{}, awsConfigErr("write awskms:///alias/NAME (three slashes: the host part is empty)")
	case u.Host != "" || u.User != nil:
		return awsConfig{}, awsConfigErr("the host part must be empty (awskms:///alias/NAME); name the region with ?region= and a private endpoint with ?endpoint=")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return awsConfig{}, awsConfigErr("a fragment (#...) is not allowed")
	}
	c := awsConfig{Alias: strings.TrimPrefix(u.Path, "/")}
	if err := checkAWSAlias(c.Alias); err != nil {
		return awsConfig{}, err
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return awsConfig{}, awsConfigErr("bad query: %v", err)
	}
	for name, vs := range q {
		if len(vs) != 1 {
			return awsConfig{}, awsConfigErr("query attribute %q appears %d times", name, len(vs))
		}
		v := vs[0]
		switch name {
		case "region":
			if v == "" || strings.IndexFunc(v, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
			}) >= 0 {
				return awsConfig{}, awsConfigErr("region %q: want a region name such as eu-west-1", v)
			}
			c.Region = v
		case "endpoint":
			ep, err := checkAWSEndpoint(v)
			if err != nil {
				return awsConfig{}, err
			}
			c.Endpoint = ep
		default:
			return awsConfig{}, awsConfigErr("unknown query attribute %q (supported: region, endpoint; credentials come from the standard AWS chain)", name)
		}
	}
	return c, nil
}

// checkAWSAlias validates the alias prefix: KMS allows letters, digits,
// '/', '_' and '-' after "alias/", and reserves "alias/aws/".
func checkAWSAlias(a string) error {
	rest, ok := strings.CutPrefix(a, "alias/")
	switch {
	case !ok || rest == "":
		return awsConfigErr("the path must be an alias prefix, /alias/NAME (KEK versions are the keys that alias/NAME-v1, -v2, ... name); key ids and ARNs are not accepted, since every version is its own key")
	case strings.HasPrefix(a, "alias/aws/"):
		return awsConfigErr("alias/aws/ is reserved for AWS managed keys")
	case len(a)+awsAliasSuffixMax > 256:
		return awsConfigErr("alias prefix %q is too long: KMS alias names are at most 256 bytes, and sidecrypt appends up to %d", a, awsAliasSuffixMax)
	case strings.HasSuffix(rest, "/"):
		return awsConfigErr("alias prefix %q ends with '/'", a)
	}
	for _, r := range rest {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '/' || r == '_' || r == '-') {
			return awsConfigErr("alias prefix %q: KMS alias names hold only letters, digits, '/', '_' and '-'", a)
		}
	}
	return nil
}

// checkAWSEndpoint accepts an https URL, or http to a loopback address
// only (an emulator in tests): KMS Decrypt answers carry data keys in the
// clear inside the TLS channel, so plain HTTP must not leave the host.
func checkAWSEndpoint(v string) (string, error) {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "", awsConfigErr("endpoint %q: want a URL such as https://kms.eu-west-1.amazonaws.com", v)
	}
	switch {
	case u.User != nil:
		return "", awsConfigErr("endpoint: credentials in the URL are not accepted; they come from the AWS credential chain")
	case u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return "", awsConfigErr("endpoint %q: give only scheme, host and port", v)
	case u.Scheme == "https":
	case u.Scheme == "http":
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "", awsConfigErr("endpoint %q: plain http is only accepted to a loopback address (an emulator); KMS answers carry data keys, use https", v)
		}
	default:
		return "", awsConfigErr("endpoint %q: scheme must be https (or http to loopback)", v)
	}
	return u.Scheme + "://" + u.Host, nil
}

// String renders the configuration as a URI, for logs and Describe.
func (c awsConfig) String() string {
	q := url.Values{}
	if c.Region != "" {
		q.Set("region", c.Region)
	}
	if c.Endpoint != "" {
		q.Set("endpoint", c.Endpoint)
	}
	s := "awskms:///" + c.Alias
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s
}
