package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
)

// MechanismAWSKMS is Wrapped.Mechanism for a data key encrypted by AWS
// KMS Encrypt under a symmetric KMS key (SYMMETRIC_DEFAULT: AES-256-GCM
// inside KMS's HSMs). The bytes are KMS's ciphertext blob, opaque to
// sidecrypt.
const MechanismAWSKMS = "aws-kms-symmetric-default"

// Encryption context entries that bind a wrap to its data key. KMS
// authenticates them as additional data (Decrypt with other values fails
// with InvalidCiphertextException) and writes them, in the clear, to
// CloudTrail with every Encrypt and Decrypt: they name a key, never hold
// key material.
const (
	awsContextKey     = "sidecrypt:key"
	awsContextVersion = "sidecrypt:key-version"
)

// awsMaxCiphertext is the largest ciphertext blob KMS Decrypt takes.
const awsMaxCiphertext = 6144

// awsMaxPlaintext is the most KMS Encrypt takes; sidecrypt's data keys are
// 64 bytes.
const awsMaxPlaintext = 4096

// awsMACDomain starts the message sidecrypt asks KMS to MAC. KMS
// GenerateMac takes 1 to 4096 bytes, and keystore records and audit
// checkpoints can be empty or longer, so KMS MACs a fixed-size digest:
// HMAC-SHA256(k, domain || 0x00 || SHA-256(msg)). With SHA-256 collision
// resistant this is as good a MAC of msg as HMAC over msg itself, and each
// request carries 56 bytes whatever the record's size.
const awsMACDomain = "sidecrypt awskms mac v1"

// awsPendingWindowDays is how long a KMS key made by a rotation that lost a
// race to another process waits before KMS deletes it: the shortest
// window KMS allows. The key was never used.
const awsPendingWindowDays = 7

// awsListTTL is how long a read of the version aliases answers CurrentKEK
// and KEKs again: each scheduler pass (every 30 seconds) asks three times
// within milliseconds, and ListAliases is the provider's most frequent
// KMS call. A rotation by another process shows after at most this long;
// a version that Unwrap does not know reads the aliases at once.
const awsListTTL = 2 * time.Second

// awsDescribeTTL is how long KEKs() trusts what it learnt of a version's
// state: a retirement made by another process shows after at most this
// long (Unwrap learns it at once, from KMS's refusal).
const awsDescribeTTL = 5 * time.Minute

// Tags sidecrypt puts on the keys it creates, so that an operator (and an
// IAM condition on aws:ResourceTag) can tell them apart.
const (
	awsTagRole    = "sidecrypt:role"
	awsTagPrefix  = "sidecrypt:alias-prefix"
	awsTagVersion = "sidecrypt:kek-version"
	awsTagRetired = "sidecrypt:retired"
)

// awsKeyGone is the state of a version whose alias names a key that no
// longer exists.
const awsKeyGone types.KeyState = "Deleted"

// awsKEK is one KEK version: the KMS key that "<prefix>-vN" names.
type awsKEK struct {
	version   uint32
	alias     string
	keyID     string // as ListAliases gives it
	arn       string
	created   time.Time
	retired   time.Time // from the sidecrypt:retired tag
	state     types.KeyState
	described time.Time
}

// usable reports whether KMS would use the key: not disabled, not pending
// deletion, and not retired by sidecrypt.
func (k *awsKEK) usable() bool {
	return k.retired.IsZero() && (k.state == "" || k.state == types.KeyStateEnabled)
}

func (k *awsKEK) ref() string {
	if k.arn != "" {
		return k.arn
	}
	return k.keyID
}

// awsProvider keeps KEKs as symmetric AWS KMS keys, one per version.
type awsProvider struct {
	cfg    awsConfig
	region string
	client *kms.Client
	log    *slog.Logger

	mu      sync.Mutex
	keks    map[uint32]*awsKEK
	current uint32
	// aux maps an auxiliary key's suffix ("audit", "records",
	// "backup-signing") to its key ARN, once found or made.
	aux     map[string]string
	signPub *ecdsa.PublicKey
	// listed is when the aliases were last read (awsListTTL).
	listed time.Time

	rotateMu sync.Mutex
	closed   atomic.Bool
}

// openAWSKMS builds the client from the standard AWS configuration chain
// and finds (or, with opts.Create, makes) the KEK versions.
func openAWSKMS(ctx context.Context, cfg awsConfig, opts Options, log *slog.Logger) (Provider, error) {
	var lo []func(*awsconfig.LoadOptions) error
	if cfg.Region != "" {
		lo = append(lo, awsconfig.WithRegion(cfg.Region))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		// The chain's errors name files and variables, not their values.
		return nil, fmt.Errorf("hsm: awskms: open (%s): load the AWS configuration: %w: %v", cfg.Alias, ErrConfig, err)
	}
	if ac.Region == "" {
		return nil, fmt.Errorf("hsm: awskms: open (%s): no AWS region: add ?region= to the URI or set AWS_REGION: %w", cfg.Alias, ErrConfig)
	}
	p := &awsProvider{
		cfg:    cfg,
		region: ac.Region,
		log:    log,
		keks:   map[uint32]*awsKEK{},
		aux:    map[string]string{},
	}
	p.client = kms.NewFromConfig(ac, func(o *kms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	if err := p.refresh(ctx); err != nil {
		return nil, p.wrapErr("open", cfg.Alias, err)
	}
	if p.current == 0 {
		if !opts.Create {
			return nil, fmt.Errorf("hsm: awskms: open (region %s): %w: alias %s does not exist; open with Create (sidecrypt serve, keys create, kek rotate) to make the first version: %w",
				p.region, ErrNoKEK, p.versionAlias(1), ErrUnavailable)
		}
		if _, err := p.createKEK(ctx, 1); err != nil {
			return nil, err
		}
		log.Info("hsm: awskms provider created the first KEK version", "region", p.region, "alias", p.versionAlias(1))
	}
	log.Info("hsm: awskms provider ready", "region", p.region, "alias_prefix", cfg.Alias, "kek_version", p.current, "endpoint", cfg.Endpoint)
	return p, nil
}

func (p *awsProvider) versionAlias(v uint32) string  { return fmt.Sprintf("%s-v%d", p.cfg.Alias, v) }
func (p *awsProvider) auxAlias(suffix string) string { return p.cfg.Alias + "-" + suffix }

// parseVersionAlias returns N from "<prefix>-vN".
func (p *awsProvider) parseVersionAlias(name string) (uint32, bool) {
	digits, ok := strings.CutPrefix(name, p.cfg.Alias+"-v")
	if !ok || digits == "" || digits[0] == '0' {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 32)
	return uint32(n), err == nil && n > 0
}

// awsCodeError is a KMS error reduced to what may be shown: the AWS error
// code, never the message (messages can echo request values).
type awsCodeError struct{ code string }

func (e *awsCodeError) Error() string { return "AWS error " + e.code }

// awsCode returns the AWS error code of err, or "".
func awsCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// sanitize turns an SDK error into one that names the AWS error code and
// nothing from the request or response: a ValidationException message, for
// one, may quote the plaintext it refused. Errors without a code (no
// network, no credentials, cancelled) keep a short description.
func sanitize(err error) error {
	if err == nil {
		return nil
	}
	if code := awsCode(err); code != "" {
		return &awsCodeError{code}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("KMS request did not finish: %w", context.DeadlineExceeded)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("KMS request did not finish: %w", context.Canceled)
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) {
		return errors.New("KMS sent a response that could not be read")
	}
	var oe *smithy.OperationError
	if errors.As(err, &oe) {
		// Transport and credential errors: dial failures, TLS, "failed
		// to retrieve credentials". They carry the endpoint and the
		// chain's explanation, never a payload.
		return fmt.Errorf("KMS %s request failed: %v", oe.Operation(), transportCause(oe.Unwrap()))
	}
	return err
}

// transportCause keeps the innermost explanation of a failed request
// (connection refused, no such host, missing credentials).
func transportCause(err error) string {
	if err == nil {
		return "unknown error"
	}
	s := err.Error()
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// awsSentinel maps a KMS error to a sentinel, for an operation on a data key
// wrap (unwrap) or on anything else.
func awsSentinel(err error, unwrap bool) error {
	switch code := awsCode(err); code {
	case "":
		return ErrUnavailable
	case "InvalidCiphertextException", "IncorrectKeyException":
		if unwrap {
			return ErrUnwrap
		}
	case "ValidationException":
		if unwrap {
			return ErrUnwrap
		}
		return ErrInvalidArgument
	case "DisabledException", "KMSInvalidStateException":
		if unwrap {
			return ErrKEKRetired
		}
	case "NotFoundException":
		if unwrap {
			return ErrUnknownKEK
		}
	case "KMSInvalidMacException":
		return ErrRecordMAC
	}
	return ErrUnavailable
}

// hint says what an operator can do about some codes.
func hint(err error) string {
	switch awsCode(err) {
	case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException":
		return " (check the credentials and the IAM and key policies: docs/KEK.md, \"IAM policy\")"
	case "ThrottlingException", "LimitExceededException":
		return " (KMS request quota reached: a longer SIDECRYPT_CACHE_TTL makes fewer calls)"
	case "DisabledException":
		return " (the KMS key is disabled)"
	case "KMSInvalidStateException":
		return " (the KMS key is pending deletion or otherwise unusable)"
	}
	return ""
}

// wrapErr names the operation, the KMS key and the region, with a
// sentinel for err (a sentinel already, or a KMS error classified as
// unrelated to a data key wrap).
func (p *awsProvider) wrapErr(op, key string, err error) error {
	if isSentinel(err) {
		return fmt.Errorf("hsm: awskms: %s (key %s, region %s): %w", op, key, p.region, err)
	}
	return fmt.Errorf("hsm: awskms: %s (key %s, region %s): %w: %w%s", op, key, p.region, awsSentinel(err, false), sanitize(err), hint(err))
}

// unwrapErr is wrapErr for errors of Decrypt.
func (p *awsProvider) unwrapErr(op, key string, err error) error {
	return fmt.Errorf("hsm: awskms: %s (key %s, region %s): %w: %w%s", op, key, p.region, awsSentinel(err, true), sanitize(err), hint(err))
}

func (p *awsProvider) closedErr(op string) error {
	return fmt.Errorf("hsm: awskms: %s (%s, region %s): %w: provider is closed", op, p.cfg.Alias, p.region, ErrUnavailable)
}

// listVersions reads every alias "<prefix>-vN" (ListAliases has no
// prefix filter, so all of the account's aliases in the region are read,
// 100 a page).
func (p *awsProvider) listVersions(ctx context.Context) (map[uint32]string, error) {
	out := map[uint32]string{}
	pg := kms.NewListAliasesPaginator(p.client, &kms.ListAliasesInput{Limit: aws.Int32(100)})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, a := range page.Aliases {
			if a.AliasName == nil || a.TargetKeyId == nil {
				continue
			}
			if v, ok := p.parseVersionAlias(*a.AliasName); ok {
				out[v] = *a.TargetKeyId
			}
		}
	}
	return out, nil
}

// describe reads a version's KMS key: its ARN, creation date and state,
// and, when it is not enabled, when sidecrypt retired it.
func (p *awsProvider) describe(ctx context.Context, k *awsKEK) error {
	out, err := p.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k.keyID)})
	if awsCode(err) == "NotFoundException" {
		// The alias outlived its key: the version is gone for good, and
		// unwrapping under it fails with ErrUnknownKEK.
		k.state, k.described = awsKeyGone, time.Now()
		return nil
	}
	if err != nil {
		return err
	}
	md := out.KeyMetadata
	if md == nil {
		return errors.New("DescribeKey returned no metadata")
	}
	k.arn = aws.ToString(md.Arn)
	k.state = md.KeyState
	if md.CreationDate != nil {
		k.created = md.CreationDate.UTC()
	}
	if md.KeySpec != "" && md.KeySpec != types.KeySpecSymmetricDefault || md.KeyUsage != "" && md.KeyUsage != types.KeyUsageTypeEncryptDecrypt {
		return fmt.Errorf("%w: KMS key %s (%s) is %s/%s, not a symmetric encrypt/decrypt key; sidecrypt refuses to use it", ErrUnavailable, k.alias, k.ref(), md.KeySpec, md.KeyUsage)
	}
	if k.state != types.KeyStateEnabled && k.retired.IsZero() {
		tags, err := p.client.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(k.ref())})
		if err != nil {
			return err
		}
		for _, t := range tags.Tags {
			if aws.ToString(t.TagKey) == awsTagRetired {
				if at, err := time.Parse(time.RFC3339, aws.ToString(t.TagValue)); err == nil {
					k.retired = at.UTC()
				}
			}
		}
	}
	k.described = time.Now()
	return nil
}

// refresh re-reads the version aliases, and describes versions it has
// not seen (or, with full, whose description is older than
// awsDescribeTTL). Versions keep what was learnt of them.
func (p *awsProvider) refresh(ctx context.Context) error {
	return p.refreshFull(ctx, false)
}

// refreshRecent is refresh, unless the aliases were read less than
// awsListTTL ago.
func (p *awsProvider) refreshRecent(ctx context.Context, full bool) error {
	p.mu.Lock()
	recent := !p.listed.IsZero() && time.Since(p.listed) < awsListTTL
	p.mu.Unlock()
	if recent && !full {
		return nil
	}
	if recent {
		return p.describeStale(ctx)
	}
	return p.refreshFull(ctx, full)
}

// describeStale describes again the versions whose description is older
// than awsDescribeTTL, without reading the aliases.
func (p *awsProvider) describeStale(ctx context.Context) error {
	p.mu.Lock()
	var stale []*awsKEK
	for _, k := range p.keks {
		if k.retired.IsZero() && time.Since(k.described) > awsDescribeTTL {
			cp := *k
			stale = append(stale, &cp)
		}
	}
	p.mu.Unlock()
	for _, k := range stale {
		if err := p.describe(ctx, k); err != nil {
			return err
		}
		p.mu.Lock()
		if cur := p.keks[k.version]; cur != nil && cur.keyID == k.keyID {
			p.keks[k.version] = k
		}
		p.mu.Unlock()
	}
	return nil
}

func (p *awsProvider) refreshFull(ctx context.Context, full bool) error {
	started := time.Now()
	vs, err := p.listVersions(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	old := p.keks
	p.mu.Unlock()
	next := make(map[uint32]*awsKEK, len(vs))
	var current uint32
	for v, id := range vs {
		k := &awsKEK{version: v, alias: p.versionAlias(v), keyID: id}
		if o := old[v]; o != nil && o.keyID == id {
			cp := *o
			k = &cp
		}
		stale := k.described.IsZero() || full && k.retired.IsZero() && time.Since(k.described) > awsDescribeTTL
		if stale {
			if err := p.describe(ctx, k); err != nil {
				return err
			}
		}
		next[v] = k
		current = max(current, v)
	}
	p.mu.Lock()
	p.keks, p.current, p.listed = next, current, started
	p.mu.Unlock()
	return nil
}

// currentKEK returns the current version as last read. Every version's
// alias may have been deleted since Open (by hand): then there is none.
func (p *awsProvider) currentKEK() (*awsKEK, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k := p.keks[p.current]; k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: no alias %s-vN is left", ErrUnavailable, p.cfg.Alias)
}

// kek returns version v, reading the aliases again once when it is not
// known (another process may have rotated).
func (p *awsProvider) kek(ctx context.Context, v uint32) (*awsKEK, error) {
	p.mu.Lock()
	k := p.keks[v]
	p.mu.Unlock()
	if k != nil {
		return k, nil
	}
	if err := p.refresh(ctx); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if k = p.keks[v]; k == nil {
		return nil, fmt.Errorf("%w: v%d: no alias %s", ErrUnknownKEK, v, p.versionAlias(v))
	}
	return k, nil
}

// createKEK makes KMS key version v and points "<prefix>-vN" at it. If the
// alias exists already (another process rotated at the same moment), the
// new key is scheduled for deletion and the winner's is used.
func (p *awsProvider) createKEK(ctx context.Context, v uint32) (uint32, error) {
	alias := p.versionAlias(v)
	out, err := p.client.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     types.KeySpecSymmetricDefault,
		KeyUsage:    types.KeyUsageTypeEncryptDecrypt,
		Description: aws.String(fmt.Sprintf("sidecrypt KEK v%d (%s): wraps data keys; never used for anything else", v, alias)),
		Tags: []types.Tag{
			{TagKey: aws.String(awsTagRole), TagValue: aws.String("kek")},
			{TagKey: aws.String(awsTagPrefix), TagValue: aws.String(p.cfg.Alias)},
			{TagKey: aws.String(awsTagVersion), TagValue: aws.String(strconv.FormatUint(uint64(v), 10))},
		},
	})
	if err != nil {
		return 0, p.wrapErr(fmt.Sprintf("create KEK v%d", v), alias, err)
	}
	keyID := aws.ToString(out.KeyMetadata.KeyId)
	_, err = p.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(keyID)})
	if awsCode(err) == "AlreadyExistsException" {
		p.discard(ctx, keyID, alias)
		if err := p.refresh(ctx); err != nil {
			return 0, p.wrapErr("rotate KEK", alias, err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.current, nil
	}
	if err != nil {
		p.discard(ctx, keyID, alias)
		return 0, p.wrapErr(fmt.Sprintf("create alias for KEK v%d", v), alias, err)
	}
	if err := p.refresh(ctx); err != nil {
		return 0, p.wrapErr("rotate KEK", alias, err)
	}
	return v, nil
}

// discard schedules a KMS key that sidecrypt made but never used for
// deletion; failing that, it says which key to delete by hand.
func (p *awsProvider) discard(ctx context.Context, keyID, alias string) {
	_, err := p.client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(keyID), PendingWindowInDays: aws.Int32(awsPendingWindowDays)})
	if err != nil {
		p.log.Warn("hsm: awskms: a KMS key made for a KEK version that another process created first could not be scheduled for deletion; it was never used: delete it by hand",
			"key_id", keyID, "alias", alias, "region", p.region, "error", sanitize(err))
		return
	}
	p.log.Info("hsm: awskms: another process created this KEK version first; the unused KMS key is scheduled for deletion", "key_id", keyID, "alias", alias, "days", awsPendingWindowDays)
}

// encryptionContext binds a wrap to its data key.
func encryptionContext(b Binding) map[string]string {
	return map[string]string{
		awsContextKey:     b.Key,
		awsContextVersion: strconv.FormatUint(uint64(b.Version), 10),
	}
}

// Wrap encrypts dek with KMS Encrypt under the current version's key, with
// the data key's name and version as encryption context.
func (p *awsProvider) Wrap(ctx context.Context, dek []byte, b Binding) (Wrapped, error) {
	if p.closed.Load() {
		return Wrapped{}, p.closedErr("wrap")
	}
	if err := checkDEKLen(len(dek)); err != nil {
		return Wrapped{}, p.wrapErr("wrap", p.cfg.Alias, err)
	}
	if len(dek) > awsMaxPlaintext {
		return Wrapped{}, p.wrapErr("wrap", p.cfg.Alias, fmt.Errorf("%w: data key of %d bytes; KMS Encrypt takes at most %d", ErrInvalidArgument, len(dek), awsMaxPlaintext))
	}
	k, err := p.currentKEK()
	if err != nil {
		return Wrapped{}, p.wrapErr("wrap", p.cfg.Alias, err)
	}
	op := fmt.Sprintf("wrap under KEK v%d", k.version)
	if !k.usable() {
		return Wrapped{}, p.wrapErr(op, k.alias, fmt.Errorf("%w: the current KEK version is %s", ErrKEKRetired, k.stateName()))
	}
	out, err := p.client.Encrypt(ctx, &kms.EncryptInput{
		KeyId:             aws.String(k.ref()),
		Plaintext:         dek,
		EncryptionContext: encryptionContext(b),
	})
	if err != nil {
		return Wrapped{}, p.wrapErr(op, k.alias, err)
	}
	return Wrapped{KEKVersion: k.version, Mechanism: MechanismAWSKMS, Bytes: out.CiphertextBlob}, nil
}

func (k *awsKEK) stateName() string {
	if !k.retired.IsZero() {
		return "retired"
	}
	return string(k.state)
}

// Unwrap decrypts w with KMS Decrypt, naming the version's key (so KMS
// refuses a blob made under another key) and the binding as encryption
// context (so it refuses a blob made for another data key).
func (p *awsProvider) Unwrap(ctx context.Context, w Wrapped, b Binding) ([]byte, error) {
	op := fmt.Sprintf("unwrap under KEK v%d", w.KEKVersion)
	if p.closed.Load() {
		return nil, p.closedErr(op)
	}
	if w.Mechanism != MechanismAWSKMS {
		return nil, p.wrapErr(op, p.cfg.Alias, fmt.Errorf("%w: mechanism %q; this provider uses %q", ErrUnwrap, w.Mechanism, MechanismAWSKMS))
	}
	if n := len(w.Bytes); n == 0 || n > awsMaxCiphertext {
		return nil, p.wrapErr(op, p.cfg.Alias, fmt.Errorf("%w: wrapped key of %d bytes; KMS ciphertexts are 1 to %d", ErrUnwrap, n, awsMaxCiphertext))
	}
	k, err := p.kek(ctx, w.KEKVersion)
	if err != nil {
		return nil, p.wrapErr(op, p.versionAlias(w.KEKVersion), err)
	}
	if !k.retired.IsZero() {
		return nil, p.wrapErr(op, k.alias, ErrKEKRetired)
	}
	out, err := p.client.Decrypt(ctx, &kms.DecryptInput{
		KeyId:             aws.String(k.ref()),
		CiphertextBlob:    w.Bytes,
		EncryptionContext: encryptionContext(b),
	})
	if err != nil {
		return nil, p.unwrapErr(op, k.alias, err)
	}
	if err := checkDEKLen(len(out.Plaintext)); err != nil {
		clear(out.Plaintext)
		return nil, p.wrapErr(op, k.alias, fmt.Errorf("%w: KMS returned a plaintext of an unusable length", ErrUnwrap))
	}
	return out.Plaintext, nil
}

// CurrentKEK reads the aliases again: a rotation by another process must
// show here, since the re-wrap job compares it with each record's version.
func (p *awsProvider) CurrentKEK(ctx context.Context) (uint32, error) {
	if p.closed.Load() {
		return 0, p.closedErr("current KEK")
	}
	if err := p.refreshRecent(ctx, false); err != nil {
		return 0, p.wrapErr("current KEK", p.cfg.Alias, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.current, nil
}

func (p *awsProvider) RotateKEK(ctx context.Context) (uint32, error) {
	if p.closed.Load() {
		return 0, p.closedErr("rotate KEK")
	}
	p.rotateMu.Lock()
	defer p.rotateMu.Unlock()
	if err := p.refresh(ctx); err != nil {
		return 0, p.wrapErr("rotate KEK", p.cfg.Alias, err)
	}
	p.mu.Lock()
	next := p.current + 1
	p.mu.Unlock()
	v, err := p.createKEK(ctx, next)
	if err != nil {
		return 0, err
	}
	p.log.Info("hsm: awskms provider rotated KEK", "region", p.region, "alias", p.versionAlias(v), "kek_version", v)
	return v, nil
}

func (p *awsProvider) KEKs(ctx context.Context) ([]KEKInfo, error) {
	if p.closed.Load() {
		return nil, p.closedErr("list KEKs")
	}
	if err := p.refreshRecent(ctx, true); err != nil {
		return nil, p.wrapErr("list KEKs", p.cfg.Alias, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]KEKInfo, 0, len(p.keks))
	for v, k := range p.keks {
		state := "active"
		switch {
		case !k.usable():
			state = "retired"
		case v == p.current:
			state = "current"
		}
		out = append(out, KEKInfo{Version: v, State: state, Created: k.created, Retired: k.retired,
			Label: k.alias + " (" + k.ref() + ")"})
	}
	slices.SortFunc(out, func(a, b KEKInfo) int { return int(a.Version) - int(b.Version) })
	return out, nil
}

// RetireKEK tags the version's key with the retirement time, then disables
// it: from then on KMS itself refuses it (DisabledException). Disabling
// is reversible by whoever may call kms:EnableKey (docs/KEK.md); deleting
// the key, once nothing needs it, is the operator's decision.
func (p *awsProvider) RetireKEK(ctx context.Context, version uint32) error {
	op := fmt.Sprintf("retire KEK v%d", version)
	if p.closed.Load() {
		return p.closedErr(op)
	}
	p.rotateMu.Lock()
	defer p.rotateMu.Unlock()
	if err := p.refresh(ctx); err != nil {
		return p.wrapErr(op, p.versionAlias(version), err)
	}
	p.mu.Lock()
	k, current := p.keks[version], p.current
	p.mu.Unlock()
	switch {
	case k == nil:
		return p.wrapErr(op, p.versionAlias(version), ErrUnknownKEK)
	case version == current:
		return p.wrapErr(op, k.alias, fmt.Errorf("%w: it is the current KEK version; rotate first", ErrInvalidArgument))
	case !k.retired.IsZero():
		return nil
	}
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := p.client.TagResource(ctx, &kms.TagResourceInput{KeyId: aws.String(k.ref()),
		Tags: []types.Tag{{TagKey: aws.String(awsTagRetired), TagValue: aws.String(now.Format(time.RFC3339))}}}); err != nil {
		return p.wrapErr(op, k.alias, err)
	}
	if _, err := p.client.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(k.ref())}); err != nil {
		return p.wrapErr(op, k.alias, err)
	}
	p.mu.Lock()
	if cur := p.keks[version]; cur != nil {
		cp := *cur
		cp.retired, cp.state, cp.described = now, types.KeyStateDisabled, time.Now()
		p.keks[version] = &cp
	}
	p.mu.Unlock()
	p.log.Info("hsm: awskms provider retired KEK (KMS key disabled)", "region", p.region, "alias", k.alias, "key", k.ref())
	return nil
}

// auxKey returns the ARN of the auxiliary key "<prefix>-<suffix>", making
// it (and its alias) on first use. As with a KEK version, a race to make
// it is settled by the alias: the loser schedules its key for deletion.
func (p *awsProvider) auxKey(ctx context.Context, suffix string, spec types.KeySpec, usage types.KeyUsageType, role string) (string, error) {
	p.mu.Lock()
	arn := p.aux[suffix]
	p.mu.Unlock()
	if arn != "" {
		return arn, nil
	}
	alias := p.auxAlias(suffix)
	for attempt := 0; ; attempt++ {
		out, err := p.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(alias)})
		if err == nil {
			md := out.KeyMetadata
			if md.KeySpec != spec || md.KeyUsage != usage {
				return "", fmt.Errorf("%w: KMS key %s is %s/%s, want %s/%s; sidecrypt refuses to use it", ErrUnavailable, alias, md.KeySpec, md.KeyUsage, spec, usage)
			}
			arn = aws.ToString(md.Arn)
			p.mu.Lock()
			p.aux[suffix] = arn
			p.mu.Unlock()
			return arn, nil
		}
		if awsCode(err) != "NotFoundException" || attempt > 0 {
			return "", err
		}
		ck, err := p.client.CreateKey(ctx, &kms.CreateKeyInput{
			KeySpec:     spec,
			KeyUsage:    usage,
			Description: aws.String(fmt.Sprintf("sidecrypt %s key (%s)", role, alias)),
			Tags: []types.Tag{
				{TagKey: aws.String(awsTagRole), TagValue: aws.String(role)},
				{TagKey: aws.String(awsTagPrefix), TagValue: aws.String(p.cfg.Alias)},
			},
		})
		if err != nil {
			return "", err
		}
		keyID := aws.ToString(ck.KeyMetadata.KeyId)
		_, err = p.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(alias), TargetKeyId: aws.String(keyID)})
		switch {
		case awsCode(err) == "AlreadyExistsException":
			p.discard(ctx, keyID, alias)
		case err != nil:
			p.discard(ctx, keyID, alias)
			return "", err
		default:
			p.log.Info("hsm: awskms provider created a key", "region", p.region, "alias", alias, "role", role)
		}
	}
}

// macMessage is what KMS MACs for msg (see awsMACDomain).
func macMessage(msg []byte) []byte {
	d := sha256.Sum256(msg)
	out := make([]byte, 0, len(awsMACDomain)+1+len(d))
	out = append(out, awsMACDomain...)
	out = append(out, 0)
	return append(out, d[:]...)
}

func (p *awsProvider) mac(ctx context.Context, op, suffix, role string, msg []byte) ([]byte, error) {
	if p.closed.Load() {
		return nil, p.closedErr(op)
	}
	alias := p.auxAlias(suffix)
	arn, err := p.auxKey(ctx, suffix, types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac, role)
	if err != nil {
		return nil, p.wrapErr(op, alias, err)
	}
	out, err := p.client.GenerateMac(ctx, &kms.GenerateMacInput{
		KeyId:        aws.String(arn),
		Message:      macMessage(msg),
		MacAlgorithm: types.MacAlgorithmSpecHmacSha256,
	})
	if err != nil {
		return nil, p.wrapErr(op, alias, err)
	}
	if len(out.Mac) != RecordMACSize {
		return nil, p.wrapErr(op, alias, fmt.Errorf("%w: KMS returned a MAC of %d bytes", ErrUnavailable, len(out.Mac)))
	}
	return out.Mac, nil
}

// AuditMAC is KMS GenerateMac (HMAC_SHA_256) under the HMAC_256 key
// "<prefix>-audit", over the digest macMessage describes.
func (p *awsProvider) AuditMAC(ctx context.Context, msg []byte) ([]byte, error) {
	return p.mac(ctx, "audit MAC", "audit", "audit-mac", msg)
}

// RecordMAC is KMS GenerateMac under the HMAC_256 key "<prefix>-records".
func (p *awsProvider) RecordMAC(ctx context.Context, msg []byte) ([]byte, error) {
	return p.mac(ctx, "record MAC", "records", "record-mac", msg)
}

// VerifyRecordMAC is KMS VerifyMac: KMS compares. An invalid MAC is
// KMSInvalidMacException from AWS, and MacValid false from emulators.
func (p *awsProvider) VerifyRecordMAC(ctx context.Context, msg, mac []byte) error {
	const op = "verify record MAC"
	if p.closed.Load() {
		return p.closedErr(op)
	}
	alias := p.auxAlias("records")
	if len(mac) != RecordMACSize {
		return p.wrapErr(op, alias, fmt.Errorf("%w: MAC of %d bytes", ErrRecordMAC, len(mac)))
	}
	arn, err := p.auxKey(ctx, "records", types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac, "record-mac")
	if err != nil {
		return p.wrapErr(op, alias, err)
	}
	out, err := p.client.VerifyMac(ctx, &kms.VerifyMacInput{
		KeyId:        aws.String(arn),
		Message:      macMessage(msg),
		Mac:          mac,
		MacAlgorithm: types.MacAlgorithmSpecHmacSha256,
	})
	if err != nil {
		return p.wrapErr(op, alias, err)
	}
	if !out.MacValid {
		return p.wrapErr(op, alias, ErrRecordMAC)
	}
	return nil
}

// signingKey returns the ARN and public key of the ECC_NIST_P256
// SIGN_VERIFY key "<prefix>-backup-signing".
func (p *awsProvider) signingKey(ctx context.Context) (string, *ecdsa.PublicKey, error) {
	arn, err := p.auxKey(ctx, "backup-signing", types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify, "backup-signing")
	if err != nil {
		return "", nil, err
	}
	p.mu.Lock()
	pub := p.signPub
	p.mu.Unlock()
	if pub != nil {
		return arn, pub, nil
	}
	out, err := p.client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(arn)})
	if err != nil {
		return "", nil, err
	}
	k, err := x509.ParsePKIXPublicKey(out.PublicKey)
	if err != nil {
		return "", nil, fmt.Errorf("%w: the backup signing key's public key does not parse: %v", ErrUnavailable, err)
	}
	ec, ok := k.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return "", nil, fmt.Errorf("%w: the backup signing key is not ECDSA P-256", ErrUnavailable)
	}
	p.mu.Lock()
	p.signPub = ec
	p.mu.Unlock()
	return arn, ec, nil
}

func (p *awsProvider) BackupPublicKey(ctx context.Context) (*ecdsa.PublicKey, error) {
	const op = "backup public key"
	if p.closed.Load() {
		return nil, p.closedErr(op)
	}
	_, pub, err := p.signingKey(ctx)
	if err != nil {
		return nil, p.wrapErr(op, p.auxAlias("backup-signing"), err)
	}
	cp := *pub
	return &cp, nil
}

// SignBackup is KMS Sign (ECDSA_SHA_256, MessageType DIGEST). KMS returns
// a DER ECDSA-Sig-Value; it is turned into r || s and checked against the
// public key before it is returned.
func (p *awsProvider) SignBackup(ctx context.Context, digest []byte) ([]byte, error) {
	const op = "sign backup"
	alias := p.auxAlias("backup-signing")
	if p.closed.Load() {
		return nil, p.closedErr(op)
	}
	if len(digest) != sha256.Size {
		return nil, p.wrapErr(op, alias, fmt.Errorf("%w: digest of %d bytes; want a SHA-256 digest", ErrInvalidArgument, len(digest)))
	}
	arn, pub, err := p.signingKey(ctx)
	if err != nil {
		return nil, p.wrapErr(op, alias, err)
	}
	out, err := p.client.Sign(ctx, &kms.SignInput{
		KeyId:            aws.String(arn),
		Message:          digest,
		MessageType:      types.MessageTypeDigest,
		SigningAlgorithm: types.SigningAlgorithmSpecEcdsaSha256,
	})
	if err != nil {
		return nil, p.wrapErr(op, alias, err)
	}
	var sv struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(out.Signature, &sv)
	if err != nil || len(rest) != 0 || sv.R == nil || sv.S == nil || sv.R.Sign() <= 0 || sv.S.Sign() <= 0 || sv.R.BitLen() > 256 || sv.S.BitLen() > 256 {
		return nil, p.wrapErr(op, alias, fmt.Errorf("%w: KMS returned a malformed ECDSA signature", ErrUnavailable))
	}
	sig := make([]byte, BackupSignatureSize)
	sv.R.FillBytes(sig[:32])
	sv.S.FillBytes(sig[32:])
	if !verifyP1363(pub, digest, sig) {
		return nil, p.wrapErr(op, alias, fmt.Errorf("%w: KMS's signature does not verify under the key's public key", ErrUnavailable))
	}
	return sig, nil
}

// Ping asks KMS to describe the current version's key: it checks the
// network path, the credentials and the key's state in one call.
func (p *awsProvider) Ping(ctx context.Context) error {
	if p.closed.Load() {
		return p.closedErr("ping")
	}
	k, err := p.currentKEK()
	if err != nil {
		return p.wrapErr("ping", p.cfg.Alias, err)
	}
	out, err := p.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k.ref())})
	if err != nil {
		return p.wrapErr("ping", k.alias, err)
	}
	if st := out.KeyMetadata.KeyState; st != types.KeyStateEnabled {
		return p.wrapErr("ping", k.alias, fmt.Errorf("%w: the current KEK's KMS key is %s", ErrUnavailable, st))
	}
	return nil
}

func (p *awsProvider) Describe() Description {
	return Description{Kind: "awskms", Object: p.cfg.Alias, Region: p.region, Endpoint: p.cfg.Endpoint, BindsContext: true}
}

// Close stops the provider. It holds no key material: the keys never leave
// KMS, and what it caches (key ids, states, the backup public key) is not
// secret.
func (p *awsProvider) Close() error {
	p.closed.Store(true)
	return nil
}

var _ Provider = (*awsProvider)(nil)
