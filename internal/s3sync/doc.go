// Package s3sync moves a local SageMaker job's files to and from Amazon S3
// (or any S3-compatible store), the way SageMaker itself does around a
// training job: channels are downloaded before training, model.tar.gz and
// output.tar.gz are uploaded after it, and the checkpoint folder is synced
// both ways.
//
// It is pure Go (aws-sdk-go-v2, no cgo). Every call takes a context; every
// error names the s3:// URL it is about and is an [*Error] whose [Kind]
// says what went wrong in words a user can act on:
//
//	s3://bucket/data: access denied: check AWS credentials (InvalidAccessKeyId: ...)
//	s3://missing/data: bucket "missing" does not exist
//	s3://bucket/data/big.npy: transfer cut off after 65536 of 1048576 bytes (tried 3 times): unexpected EOF
//
// Credentials and region come from the SDK's default chain (environment,
// shared config and credentials files, SSO, web identity, container and
// instance roles). A custom endpoint for an S3-compatible store comes from
// AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, which the SDK honours, or from
// [WithEndpoint]; with a custom endpoint requests use path-style addressing
// (http://host:port/bucket/key), which such stores expect.
//
// Downloads ([Client.Download]) list every object under a prefix and fetch
// them with a bounded pool of workers. Each object is written under a
// temporary name beside its final one and renamed only once it is whole and
// verified: the SDK validates the object's stored checksum (CRC32, CRC32C,
// CRC64NVME, SHA-1 or SHA-256, requested with ChecksumMode ENABLED), and the
// size and, for single-part objects that are not KMS- or customer-key
// encrypted, the ETag's MD5 are compared too. A transfer cut off halfway is
// retried from the start a few times, then fails; no partial file ever
// carries a final name. Files that are already there with the same size and
// content (by MD5) are not fetched again.
//
// Uploads go through the SDK's upload manager (feature/s3/manager), which
// switches to multipart uploads for large bodies: [Client.UploadTarGz]
// streams a folder's contents as a gzipped tar without a temporary file
// (SageMaker's model.tar.gz and output.tar.gz), and [Client.UploadDir]
// uploads the files of a folder that are new or changed (checkpoints).
package s3sync
