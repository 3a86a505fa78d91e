"""The nftables scenario the kernel tests build and the recorder records: written once.

``NFT_FOREIGN``: kube-proxy's nftables mode and an administrator's ``inet edge``
table (nft syntax); ``K3SNET_RULES``: one rule of each shape k3snet writes.
"""

from __future__ import annotations

from k3snet.model import ForwardRule, MasqueradeRule, SnatRule, State

__all__ = ["K3SNET_RULES", "NFT_FOREIGN"]

NFT_FOREIGN = """\
table ip kube-proxy {
	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump masquerading
	}
	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}
}
table inet edge {
	chain post {
		type nat hook postrouting priority srcnat + 10; policy accept;
		ip saddr 10.50.0.0/16 oifname "eth0" snat ip to 192.168.1.5
		ip6 saddr fd42:50::/56 ip6 daddr != fd00::/8 masquerade
	}
}
"""

K3SNET_RULES = State(owned=[
    MasqueradeRule("10.52.0.0/16", destination="192.168.2.0/24", out_interface="eth0",
                   random_fully=True),
    MasqueradeRule("10.43.0.0/16", exclude=["10.0.0.0/8", "224.0.0.0/4"]),
    SnatRule("10.44.0.0/16", destination="192.168.3.0/24", to_address="192.168.1.5"),
    MasqueradeRule("fd42:42::/56", destination="fd01:2::/64", out_interface="eth0"),
    SnatRule("fd42:43::/56", to_address="fd01:1::5", random_fully=True),
    ForwardRule("10.52.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth0"),
    ForwardRule("fd42:42::/56", "fd01:2::/64"),
])
