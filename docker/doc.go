// Package docker holds sagefit's SageMaker training images (Dockerfile.cpu,
// Dockerfile.gpu) and no Go code: its tests check the Dockerfiles against
// SageMaker's rules for bring-your-own training images and run the binary
// exactly as the images would, since no container engine runs where the
// tests do. See README.md in this folder.
package docker
