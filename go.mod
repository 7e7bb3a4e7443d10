module github.com/sagefit/sagefit

go 1.24
