"""flanneld from the Go module proxy: the wrapper module and its one local stand-in.

``go install github.com/flannel-io/flannel@v0.28.10`` stops at one dependency the proxy refuses:
``github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc`` (403 "not available"), imported only by the
Tencent-cloud backend (``pkg/backend/tencentvpc``), which ``main.go`` links unconditionally. Its sibling
``.../tencentcloud/common`` is served. The wrapper module therefore ``replace``s the ``vpc`` module with a
small local package written here (:data:`VPC_STUB_GO`): the identifiers that backend uses (``Client``,
``NewClientWithSecretId``, ``Filter``, ``Route``, ``RouteTable``, three request constructors and their
responses), every call answering an error. The ``tencent-vpc`` backend is never used by pytest-k8sstate (the
kind provider runs ``vxlan`` or ``host-gw``); asking flanneld for it fails with that error.

flanneld is built with cgo (its ``udp`` backend's proxy is C) and linked statically, as upstream's release
binaries are, so it runs in any kind node image. flannel's own CNI plugin
(``github.com/flannel-io/cni-plugin``) is not served either: the node agent writes the delegate config
that plugin would write (see ``providers/kind/data/node-routes.sh``, mode ``flannel``).
"""

from __future__ import annotations

__all__ = [
    "FLANNEL_MODULE",
    "FLANNEL_WRAPPER_MODULE",
    "VPC_MODULE",
    "flannel_ldflags",
    "flannel_wrapper_files",
]

FLANNEL_MODULE = "github.com/flannel-io/flannel"
FLANNEL_WRAPPER_MODULE = "k8sstate.local/flannelbuild"
VPC_MODULE = "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc"
_VPC_DIR = "vpcstub"

VPC_STUB_GO = """\
// Package v20170312 is pytest-k8sstate's stand-in for the Tencent Cloud VPC SDK, which the Go module proxy
// does not serve. flanneld links its tencent-vpc backend unconditionally; every call here answers an error.
package v20170312

import "errors"

var errUnavailable = errors.New("the tencent-vpc backend is not available in this flanneld build " +
\t"(pytest-k8sstate replaced its SDK, which the Go module proxy does not serve)")

type Filter struct {
\tName   *string
\tValues []*string
}

type Route struct {
\tDestinationCidrBlock *string
\tGatewayType          *string
\tGatewayId            *string
\tRouteType            *string
\tRouteId              *uint64
\tEnabled              *bool
}

type RouteTable struct {
\tRouteTableId *string
\tRouteSet     []*Route
}

type DescribeRouteTablesRequest struct{ Filters []*Filter }

type DescribeRouteTablesResponse struct {
\tResponse *struct{ RouteTableSet []*RouteTable }
}

type DeleteRoutesRequest struct {
\tRouteTableId *string
\tRoutes       []*Route
}

type DeleteRoutesResponse struct{}

type CreateRoutesRequest struct {
\tRouteTableId *string
\tRoutes       []*Route
}

type CreateRoutesResponse struct{}

type Client struct{}

func NewClientWithSecretId(secretID, secretKey, region string) (*Client, error) {
\treturn &Client{}, errUnavailable
}

func NewDescribeRouteTablesRequest() *DescribeRouteTablesRequest { return &DescribeRouteTablesRequest{} }

func NewDeleteRoutesRequest() *DeleteRoutesRequest { return &DeleteRoutesRequest{} }

func NewCreateRoutesRequest() *CreateRoutesRequest { return &CreateRoutesRequest{} }

func (c *Client) DescribeRouteTables(*DescribeRouteTablesRequest) (*DescribeRouteTablesResponse, error) {
\treturn nil, errUnavailable
}

func (c *Client) DeleteRoutes(*DeleteRoutesRequest) (*DeleteRoutesResponse, error) {
\treturn nil, errUnavailable
}

func (c *Client) CreateRoutes(*CreateRoutesRequest) (*CreateRoutesResponse, error) {
\treturn nil, errUnavailable
}
"""


def flannel_wrapper_files(version: str) -> dict[str, str]:
    """go.mod (flannel at ``version``, the ``vpc`` module replaced by ``./vpcstub``), tools.go, the stub."""
    gomod = (
        f"module {FLANNEL_WRAPPER_MODULE}\n\ngo 1.26.0\n\nrequire {FLANNEL_MODULE} {version}\n\n"
        f"// not served by the Go module proxy (403); only flannel's tencent-vpc backend imports it\n"
        f"replace {VPC_MODULE} => ./{_VPC_DIR}\n"
    )
    tools = f'//go:build tools\n\npackage flannelbuild\n\nimport _ "{FLANNEL_MODULE}"\n'
    return {
        "go.mod": gomod,
        "tools.go": tools,
        f"{_VPC_DIR}/go.mod": f"module {VPC_MODULE}\n\ngo 1.21\n",
        f"{_VPC_DIR}/v20170312/stub.go": VPC_STUB_GO,
    }


def flannel_ldflags(version: str) -> str:
    """Stripped, statically linked (cgo), with flannel's version stamp (``flanneld --version``)."""
    return f'-s -w -extldflags "-static" -X {FLANNEL_MODULE}/pkg/version.Version={version}'
