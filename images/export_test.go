package images

import "github.com/containerd/containerd/v2/core/content"

func contentRef(ref string) content.WriterOpt { return content.WithRef(ref) }
