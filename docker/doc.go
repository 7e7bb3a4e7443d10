// Package docker holds sagefit's SageMaker training images (Dockerfile.cpu,
// Dockerfile.gpu), the scripts that build them without a registry, and no
// Go code. Its tests check the Dockerfiles against SageMaker's rules for
// bring-your-own training images and run the binary exactly as the images
// would (image_test.go, needing no container engine); images_test.go runs
// the images themselves, built by `make test-images`, and skips without
// them. See README.md in this folder.
package docker
