/* See LICENSE file for copyright and license details. */
/*
 * vipctl adds, removes, checks and shows a virtual IP address, IPv4 or
 * IPv6.  It talks to the kernel through rtnetlink, announces a move with
 * gratuitous ARP (request and reply form) or unsolicited neighbour
 * advertisements with the override flag, and asks the link whether
 * somebody else already answers for the address: an RFC 5227 ARP probe,
 * or a duplicate address detection neighbour solicitation for IPv6.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>

#include <err.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "hatrio.h"

/* Exit statuses of vipctl beyond the common ones of hatrio.h. */
#define EXIT_NOIF	2	/* no such interface */
#define EXIT_PERM	3	/* not permitted */

#define VIP_COUNT	5		/* announcements in a burst */
#define VIP_INTERVAL_US	200000		/* between them */
#define VIP_TIMEOUT_US	1000000		/* how long check listens */
#define VIP_PROBES	3		/* probes sent within the timeout */
#define VIP_MAX_US	3600000000ULL	/* 1h: the longest -i, -r and -T */
#define VIP_USABLE_US	1000000		/* wait for an IPv6 address at most */

#define ARP_LEN		28
#define IP6_HDR_LEN	40
#define ND_NS_LEN	24
#define ND_NA_LEN	32		/* with a target link-layer option */
#define ND_NS		135
#define ND_NA		136
#define ND_OPT_TLLA	2
#define ETH_ALEN_	6

struct vip {
	int		 family;
	unsigned char	 addr[16];	/* 4 or 16 bytes in network order */
	int		 plen;		/* -1 when none was given */
	char		 str[INET6_ADDRSTRLEN + 4];	/* "addr/plen" */
	char		 astr[INET6_ADDRSTRLEN];	/* "addr" */
};

struct iface {
	const char	*name;
	int		 index;
	int		 ether;		/* has an Ethernet address */
	unsigned char	 mac[ETH_ALEN_];
};

/* The state of "add": the announcement schedule and what to undo. */
struct announcer {
	struct vip	*vip;
	struct iface	*ifp;
	int		 nl;		/* rtnetlink socket */
	int		 pkt;		/* packet socket for sending */
	int		 left;		/* announcements left in the burst */
	int		 failed;	/* a send of the burst failed */
	uint64_t	 interval;
	uint64_t	 refresh;
	int		 readyfd;
	int		 status;
	struct event_base *base;
	struct event	*timer;
};

static void	 usage(void);
static void	 die(int, int, const char *, ...)
		    __attribute__((format(printf, 3, 4), noreturn));
static int	 errno_status(int);
static uint64_t	 opt_duration(int, const char *, int);
static void	 parse_vip(const char *, int, struct vip *);
static void	 parse_iface(const char *, struct iface *);
static const char *fmt_mac(const unsigned char *, char *, size_t);
static int	 nl_open(void);
static ssize_t	 nl_recv(int, void *, size_t);
static const unsigned char *addr_attr(struct nlmsghdr *, size_t);
static int	 held_fn(struct nlmsghdr *, void *);
static int	 show_fn(struct nlmsghdr *, void *);
static int	 pkt_send(int, struct iface *, int, const unsigned char *,
		    const void *, size_t);
static int	 arp_answer(const unsigned char *, size_t, struct vip *,
		    struct iface *, unsigned char *);
static int	 na_answer(const unsigned char *, size_t,
		    const struct sockaddr_ll *, struct vip *, struct iface *,
		    unsigned char *);
static void	 ann_stop(struct announcer *);
static void	 ann_timer(evutil_socket_t, short, void *);
static void	 ann_signal(evutil_socket_t, short, void *);
static int	 nl_request(int, struct nlmsghdr *);
static int	 nl_dump(int, int, int (*)(struct nlmsghdr *, void *),
		    void *);
static void	 nl_addattr(struct nlmsghdr *, size_t, int, const void *,
		    size_t);
static int	 addr_change(int, int, struct vip *, struct iface *);
static int	 addr_held(int, struct vip *, struct iface *);
static int	 pkt_open(int, struct iface *);
static int	 arp_send(int, struct iface *, int, const unsigned char *,
		    const unsigned char *, const unsigned char *);
static uint16_t	 icmp6_cksum(const unsigned char *, const unsigned char *,
		    const unsigned char *, size_t);
static int	 ip6_send(int, struct iface *, const unsigned char *,
		    const unsigned char *, const unsigned char *,
		    unsigned char *, size_t);
static int	 announce(int, struct vip *, struct iface *);
static int	 probe(struct vip *, struct iface *, uint64_t,
		    unsigned char *);
static void	 wait_usable(int, struct vip *, struct iface *);
static int	 cmd_add(int, char **);
static int	 cmd_del(int, char **);
static int	 cmd_check(int, char **);
static int	 cmd_show(int, char **);

static void
usage(void)
{
	fprintf(stderr,
	    "usage: vipctl add [-x] [--check] [-d fd] [-i interval] [-N count] "
	    "[-r period] [-T timeout] address/prefix dev interface\n"
	    "       vipctl del address/prefix dev interface\n"
	    "       vipctl check [-T timeout] address dev interface\n"
	    "       vipctl show [dev interface]\n");
	exit(EXIT_USAGE);
}

/*
 * A duration option (-i, -r, -T) in microseconds, or the usage exit.  At
 * most 1h: longer is no use for an announcement or a probe, and keeps the
 * millisecond timeouts given to poll(2) within an int.
 */
static uint64_t
opt_duration(int ch, const char *arg, int zero_ok)
{
	const char	*e;
	uint64_t	 us;

	if ((e = parse_duration(arg, &us)) != NULL)
		errx(EXIT_USAGE, "-%c %s: %s", ch, arg, e);
	if (us == 0 && !zero_ok)
		errx(EXIT_USAGE, "-%c %s: zero", ch, arg);
	if (us > VIP_MAX_US)
		errx(EXIT_USAGE, "-%c %s: longer than 1h", ch, arg);
	return us;
}

/* The exit status that tells a script what kind of failure errno was. */
static int
errno_status(int e)
{
	switch (e) {
	case EPERM:
	case EACCES:
		return EXIT_PERM;
	case ENODEV:
		return EXIT_NOIF;
	default:
		return EXIT_SYS;
	}
}

/* die: err(3) with an explicit errno; status 0 picks it from errno. */
static void
die(int status, int e, const char *fmt, ...)
{
	va_list	ap;

	if (status == 0)
		status = errno_status(e);
	va_start(ap, fmt);
	errno = e;
	verr(status, fmt, ap);
	/* NOTREACHED */
}

/*
 * parse_vip: "198.18.0.50/24" or "2001:2::50/64"; with need_prefix == 0
 * the prefix may be left out.
 */
static void
parse_vip(const char *s, int need_prefix, struct vip *v)
{
	char		 buf[INET6_ADDRSTRLEN + 8], *slash, *end;
	long		 plen = -1;
	int		 max;

	memset(v, 0, sizeof(*v));
	if (strlen(s) >= sizeof(buf))
		errx(EXIT_USAGE, "bad address: %s", s);
	strcpy(buf, s);
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, v->addr) == 1) {
		v->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, v->addr) == 1) {
		v->family = AF_INET6;
		max = 128;
	} else
		errx(EXIT_USAGE, "bad address: %s", s);
	if (v->family == AF_INET ? (v->addr[0] == 0 || v->addr[0] >= 224 ||
	    v->addr[0] == 127) : (v->addr[0] == 0xff ||
	    IN6_IS_ADDR_UNSPECIFIED((struct in6_addr *)v->addr) ||
	    IN6_IS_ADDR_LOOPBACK((struct in6_addr *)v->addr)))
		errx(EXIT_USAGE, "bad address: %s", s);
	if (slash != NULL) {
		errno = 0;
		plen = strtol(slash, &end, 10);
		if (*slash < '0' || *slash > '9' || *end != '\0' ||
		    errno != 0 || plen < 1 || plen > max)
			errx(EXIT_USAGE, "bad prefix: %s", s);
	} else if (need_prefix)
		errx(EXIT_USAGE, "bad address: %s: no prefix length", s);
	v->plen = (int)plen;
	inet_ntop(v->family, v->addr, v->astr, sizeof(v->astr));
	if (plen >= 0)
		snprintf(v->str, sizeof(v->str), "%s/%ld", v->astr, plen);
	else
		snprintf(v->str, sizeof(v->str), "%s", v->astr);
}

/* parse_iface: the interface's index and, when it has one, its MAC. */
static void
parse_iface(const char *name, struct iface *ifp)
{
	struct ifreq	 ifr;
	int		 s;

	memset(ifp, 0, sizeof(*ifp));
	ifp->name = name;
	if (strlen(name) >= IFNAMSIZ || strchr(name, '/') != NULL ||
	    (ifp->index = (int)if_nametoindex(name)) == 0)
		errx(EXIT_NOIF, "no such interface: %s", name);
	if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		err(EXIT_SYS, "socket");
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, name);
	if (ioctl(s, SIOCGIFHWADDR, &ifr) == -1) {
		if (errno == ENODEV)
			errx(EXIT_NOIF, "no such interface: %s", name);
		err(EXIT_SYS, "%s: hardware address", name);
	}
	close(s);
	if (ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER) {
		ifp->ether = 1;
		memcpy(ifp->mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN_);
	}
}

static const char *
fmt_mac(const unsigned char *m, char *buf, size_t len)
{
	snprintf(buf, len, "%02x:%02x:%02x:%02x:%02x:%02x",
	    m[0], m[1], m[2], m[3], m[4], m[5]);
	return buf;
}

/* rtnetlink */

static uint32_t	nl_seq;

static int
nl_open(void)
{
	struct sockaddr_nl	 sa;
	int			 fd;

	if ((fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC,
	    NETLINK_ROUTE)) == -1)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.nl_family = AF_NETLINK;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
nl_addattr(struct nlmsghdr *nh, size_t max, int type, const void *data,
    size_t len)
{
	struct rtattr	*rta;
	size_t		 off = NLMSG_ALIGN(nh->nlmsg_len);

	if (off + RTA_SPACE(len) > max)
		errx(EXIT_SYS, "netlink request too long");
	rta = (struct rtattr *)((char *)nh + off);
	rta->rta_type = type;
	rta->rta_len = RTA_LENGTH(len);
	memcpy(RTA_DATA(rta), data, len);
	nh->nlmsg_len = off + RTA_SPACE(len);
}

/*
 * nl_recv: one datagram from the kernel into buf.  Returns its length (0
 * for a datagram from elsewhere, which is dropped), or -1 with errno set.
 */
static ssize_t
nl_recv(int fd, void *buf, size_t len)
{
	struct sockaddr_nl	 sa;
	struct iovec		 iov = { buf, len };
	struct msghdr		 msg;
	ssize_t			 n;

	memset(&msg, 0, sizeof(msg));
	msg.msg_name = &sa;
	msg.msg_namelen = sizeof(sa);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	do
		n = recvmsg(fd, &msg, 0);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	if (msg.msg_flags & MSG_TRUNC) {
		errno = EMSGSIZE;
		return -1;
	}
	if (msg.msg_namelen != sizeof(sa) || sa.nl_pid != 0) {
		/* not from the kernel: drop it */
		return 0;
	}
	return n;
}

/*
 * nl_request: send one request that asks for an acknowledgement and wait
 * for it.  Returns 0 on success, the kernel's errno otherwise, or -1 with
 * errno set when talking to the kernel failed.
 */
static int
nl_request(int fd, struct nlmsghdr *req)
{
	static uint32_t	 buf[8192];
	struct nlmsghdr	*nh;
	struct nlmsgerr	*e;
	ssize_t		 n;
	size_t		 len;

	req->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	req->nlmsg_seq = ++nl_seq;
	if (send(fd, req, req->nlmsg_len, 0) != (ssize_t)req->nlmsg_len)
		return -1;
	for (;;) {
		if ((n = nl_recv(fd, buf, sizeof(buf))) == -1)
			return -1;
		len = (size_t)n;
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, len);
		    nh = NLMSG_NEXT(nh, len)) {
			if (nh->nlmsg_seq != req->nlmsg_seq)
				continue;
			if (nh->nlmsg_type != NLMSG_ERROR)
				continue;
			if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(*e))) {
				errno = EBADMSG;
				return -1;
			}
			e = NLMSG_DATA(nh);
			return -e->error;
		}
	}
}

/*
 * nl_dump: every address of the kernel (of one family, AF_UNSPEC for
 * all), each handed to fn until it returns non-zero.  Returns fn's last
 * answer, or -1 with errno set.
 */
static int
nl_dump(int fd, int family, int (*fn)(struct nlmsghdr *, void *), void *arg)
{
	static uint32_t	 buf[8192];
	struct {
		struct nlmsghdr	 nh;
		struct ifaddrmsg ifa;
	} req;
	struct nlmsghdr	*nh;
	struct nlmsgerr	*e;
	ssize_t		 n;
	size_t		 len;
	int		 r = 0;

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(req.ifa));
	req.nh.nlmsg_type = RTM_GETADDR;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	req.nh.nlmsg_seq = ++nl_seq;
	req.ifa.ifa_family = family;
	if (send(fd, &req, req.nh.nlmsg_len, 0) != (ssize_t)req.nh.nlmsg_len)
		return -1;
	for (;;) {
		if ((n = nl_recv(fd, buf, sizeof(buf))) == -1)
			return -1;
		len = (size_t)n;
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, len);
		    nh = NLMSG_NEXT(nh, len)) {
			if (nh->nlmsg_seq != req.nh.nlmsg_seq)
				continue;
			if (nh->nlmsg_type == NLMSG_DONE)
				return r;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					errno = EBADMSG;
				else {
					e = NLMSG_DATA(nh);
					errno = -e->error;
				}
				return -1;
			}
			if (nh->nlmsg_type != RTM_NEWADDR || r != 0)
				continue;
			if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(struct
			    ifaddrmsg)))
				continue;
			r = fn(nh, arg);
		}
	}
}

/*
 * addr_attr: the address of an RTM_NEWADDR message: IFA_LOCAL when there
 * is one (IPv4 point-to-point has both), IFA_ADDRESS otherwise.
 */
static const unsigned char *
addr_attr(struct nlmsghdr *nh, size_t alen)
{
	struct ifaddrmsg	*ifa = NLMSG_DATA(nh);
	struct rtattr		*rta;
	const unsigned char	*local = NULL, *addr = NULL;
	int			 len;

	len = (int)nh->nlmsg_len - (int)NLMSG_LENGTH(sizeof(*ifa));
	for (rta = IFA_RTA(ifa); RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
		if (RTA_PAYLOAD(rta) != alen)
			continue;
		if (rta->rta_type == IFA_LOCAL)
			local = RTA_DATA(rta);
		else if (rta->rta_type == IFA_ADDRESS)
			addr = RTA_DATA(rta);
	}
	return local != NULL ? local : addr;
}

/*
 * addr_change: RTM_NEWADDR or RTM_DELADDR of the address.  Returns what
 * nl_request returns.
 */
static int
addr_change(int nl, int type, struct vip *v, struct iface *ifp)
{
	struct {
		struct nlmsghdr	 nh;
		struct ifaddrmsg ifa;
		char		 attrs[128];
	} req;
	size_t		 alen = v->family == AF_INET ? 4 : 16;
	uint32_t	 flags = 0;

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(req.ifa));
	req.nh.nlmsg_type = type;
	if (type == RTM_NEWADDR)
		req.nh.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	req.ifa.ifa_family = v->family;
	req.ifa.ifa_prefixlen = v->plen;
	req.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
	req.ifa.ifa_index = ifp->index;
	if (v->family == AF_INET6 && type == RTM_NEWADDR) {
		/* the move must not wait for duplicate address detection */
		flags = IFA_F_NODAD;
		req.ifa.ifa_flags = IFA_F_NODAD;
		nl_addattr(&req.nh, sizeof(req), IFA_FLAGS, &flags,
		    sizeof(flags));
	}
	nl_addattr(&req.nh, sizeof(req), IFA_LOCAL, v->addr, alen);
	nl_addattr(&req.nh, sizeof(req), IFA_ADDRESS, v->addr, alen);
	return nl_request(nl, &req.nh);
}

struct held_arg {
	struct vip	*vip;
	int		 index;
};

static int
held_fn(struct nlmsghdr *nh, void *arg)
{
	struct held_arg		*h = arg;
	struct ifaddrmsg	*ifa = NLMSG_DATA(nh);
	const unsigned char	*a;
	size_t			 alen = h->vip->family == AF_INET ? 4 : 16;

	if ((int)ifa->ifa_index != h->index ||
	    ifa->ifa_family != h->vip->family ||
	    ifa->ifa_prefixlen != h->vip->plen)
		return 0;
	if ((a = addr_attr(nh, alen)) == NULL ||
	    memcmp(a, h->vip->addr, alen) != 0)
		return 0;
	return (ifa->ifa_flags & IFA_F_TENTATIVE) ? 2 : 1;
}

/*
 * addr_held: 1 when the interface has the address, 2 when it has it but
 * the address is still tentative (not usable yet), 0 if not, -1 error.
 */
static int
addr_held(int nl, struct vip *v, struct iface *ifp)
{
	struct held_arg	h = { v, ifp->index };

	return nl_dump(nl, v->family, held_fn, &h);
}

/* link layer */

/* pkt_open: a packet socket, bound to the interface for protocol proto. */
static int
pkt_open(int proto, struct iface *ifp)
{
	struct sockaddr_ll	sll;
	int			fd;

	if ((fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC,
	    htons(proto))) == -1)
		return -1;
	if (proto != 0) {
		memset(&sll, 0, sizeof(sll));
		sll.sll_family = AF_PACKET;
		sll.sll_protocol = htons(proto);
		sll.sll_ifindex = ifp->index;
		if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) == -1) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

static int
pkt_send(int fd, struct iface *ifp, int proto, const unsigned char *dmac,
    const void *buf, size_t len)
{
	struct sockaddr_ll	sll;
	ssize_t			n;

	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(proto);
	sll.sll_ifindex = ifp->index;
	sll.sll_halen = ETH_ALEN_;
	memcpy(sll.sll_addr, dmac, ETH_ALEN_);
	n = sendto(fd, buf, len, 0, (struct sockaddr *)&sll, sizeof(sll));
	if (n == -1)
		return -1;
	if ((size_t)n != len) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

static const unsigned char eth_bcast[ETH_ALEN_] = {
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff
};

/* arp_send: one ARP packet for Ethernet and IPv4, to the broadcast. */
static int
arp_send(int fd, struct iface *ifp, int op, const unsigned char *spa,
    const unsigned char *tha, const unsigned char *tpa)
{
	unsigned char	p[ARP_LEN];

	p[0] = 0;
	p[1] = ARPHRD_ETHER;
	p[2] = ETHERTYPE_IP >> 8;
	p[3] = ETHERTYPE_IP & 0xff;
	p[4] = ETH_ALEN_;
	p[5] = 4;
	p[6] = 0;
	p[7] = op;
	memcpy(p + 8, ifp->mac, ETH_ALEN_);
	memcpy(p + 14, spa, 4);
	memcpy(p + 18, tha, ETH_ALEN_);
	memcpy(p + 24, tpa, 4);
	return pkt_send(fd, ifp, ETHERTYPE_ARP, eth_bcast, p, sizeof(p));
}

static uint16_t
icmp6_cksum(const unsigned char *src, const unsigned char *dst,
    const unsigned char *msg, size_t len)
{
	uint32_t	sum = 0;
	size_t		i;

	for (i = 0; i < 16; i += 2)
		sum += (src[i] << 8 | src[i + 1]) + (dst[i] << 8 | dst[i + 1]);
	sum += (uint32_t)(len >> 16) + (uint32_t)(len & 0xffff);
	sum += IPPROTO_ICMPV6;
	for (i = 0; i + 1 < len; i += 2)
		sum += msg[i] << 8 | msg[i + 1];
	if (len & 1)
		sum += msg[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/*
 * ip6_send: an ICMPv6 message in an IPv6 packet with hop limit 255, as
 * neighbour discovery wants it; the checksum is filled in here.
 */
static int
ip6_send(int fd, struct iface *ifp, const unsigned char *dmac,
    const unsigned char *src, const unsigned char *dst, unsigned char *msg,
    size_t len)
{
	unsigned char	p[IP6_HDR_LEN + 64];
	uint16_t	sum;

	if (len > sizeof(p) - IP6_HDR_LEN)
		errx(EXIT_SYS, "ICMPv6 message too long");
	memset(p, 0, IP6_HDR_LEN);
	p[0] = 0x60;
	p[4] = len >> 8;
	p[5] = len & 0xff;
	p[6] = IPPROTO_ICMPV6;
	p[7] = 255;
	memcpy(p + 8, src, 16);
	memcpy(p + 24, dst, 16);
	msg[2] = msg[3] = 0;
	sum = icmp6_cksum(src, dst, msg, len);
	msg[2] = sum >> 8;
	msg[3] = sum & 0xff;
	memcpy(p + IP6_HDR_LEN, msg, len);
	return pkt_send(fd, ifp, ETHERTYPE_IPV6, dmac, p, IP6_HDR_LEN + len);
}

static const unsigned char in6_allnodes[16] = {
	0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
};

/*
 * announce: tell the link that the address is here now.  IPv4: one
 * gratuitous ARP request and one gratuitous ARP reply (some hosts only
 * listen to one of the forms; Linux takes the reply form as gratuitous
 * only when the target hardware address is the sender's).  IPv6: an
 * unsolicited neighbour advertisement with the override flag to all
 * nodes.  Returns 0, or -1 with errno set.
 */
static int
announce(int fd, struct vip *v, struct iface *ifp)
{
	static const unsigned char	zero[ETH_ALEN_];
	static const unsigned char	allnodes_mac[ETH_ALEN_] = {
		0x33, 0x33, 0, 0, 0, 1
	};
	unsigned char			na[ND_NA_LEN];

	if (v->family == AF_INET) {
		if (arp_send(fd, ifp, ARPOP_REQUEST, v->addr, zero,
		    v->addr) == -1)
			return -1;
		return arp_send(fd, ifp, ARPOP_REPLY, v->addr, ifp->mac,
		    v->addr);
	}
	memset(na, 0, sizeof(na));
	na[0] = ND_NA;
	na[4] = 0x20;		/* override, not solicited, not a router */
	memcpy(na + 8, v->addr, 16);
	na[24] = ND_OPT_TLLA;
	na[25] = 1;		/* in units of 8 bytes */
	memcpy(na + 26, ifp->mac, ETH_ALEN_);
	return ip6_send(fd, ifp, allnodes_mac, v->addr, in6_allnodes, na,
	    sizeof(na));
}

/* arp_answer: 1 when an ARP packet says somebody else has the address. */
static int
arp_answer(const unsigned char *p, size_t n, struct vip *v,
    struct iface *ifp, unsigned char *mac)
{
	if (n < ARP_LEN || p[0] != 0 || p[1] != ARPHRD_ETHER ||
	    p[2] != ETHERTYPE_IP >> 8 || p[3] != (ETHERTYPE_IP & 0xff) ||
	    p[4] != ETH_ALEN_ || p[5] != 4)
		return 0;
	if (memcmp(p + 14, v->addr, 4) != 0 ||
	    memcmp(p + 8, ifp->mac, ETH_ALEN_) == 0)
		return 0;
	memcpy(mac, p + 8, ETH_ALEN_);
	return 1;
}

/*
 * na_answer: 1 when an IPv6 packet is a valid neighbour advertisement
 * for the address from somebody else.  The holder's link-layer address is
 * the target link-layer option, or else the frame's source.
 */
static int
na_answer(const unsigned char *p, size_t n, const struct sockaddr_ll *from,
    struct vip *v, struct iface *ifp, unsigned char *mac)
{
	const unsigned char	*m, *o;
	size_t			 plen, olen;

	if (n < IP6_HDR_LEN + ND_NS_LEN || p[0] >> 4 != 6)
		return 0;
	plen = (size_t)p[4] << 8 | p[5];
	if (plen > n - IP6_HDR_LEN || plen < ND_NS_LEN ||
	    p[6] != IPPROTO_ICMPV6 || p[7] != 255)
		return 0;
	m = p + IP6_HDR_LEN;
	if (m[0] != ND_NA || m[1] != 0 || memcmp(m + 8, v->addr, 16) != 0)
		return 0;
	if (icmp6_cksum(p + 8, p + 24, m, plen) != 0)
		return 0;
	if (from->sll_halen != ETH_ALEN_)
		return 0;
	memcpy(mac, from->sll_addr, ETH_ALEN_);
	for (o = m + ND_NS_LEN; o + 2 <= m + plen; o += olen) {
		if ((olen = (size_t)o[1] * 8) == 0 || olen > (size_t)(m +
		    plen - o))
			return 0;
		if (o[0] == ND_OPT_TLLA && olen >= 8)
			memcpy(mac, o + 2, ETH_ALEN_);
	}
	if (memcmp(mac, ifp->mac, ETH_ALEN_) == 0)
		return 0;
	return 1;
}

/*
 * probe: ask the link whether somebody holds the address, for timeout
 * microseconds, sending VIP_PROBES probes spread over that time.  IPv4:
 * RFC 5227 ARP probes (sender address 0.0.0.0); IPv6: duplicate address
 * detection neighbour solicitations (from :: to the solicited-node
 * group).  Returns 1 with the holder's MAC, 0 when nobody answered, -1
 * with errno set.
 */
static int
probe(struct vip *v, struct iface *ifp, uint64_t timeout, unsigned char *mac)
{
	static const unsigned char	zero[16];
	unsigned char			buf[2048], ns[ND_NS_LEN], dst[16];
	unsigned char			dmac[ETH_ALEN_];
	struct sockaddr_ll		from;
	socklen_t			fromlen;
	struct pollfd			pfd;
	uint64_t			start, now, next, until;
	ssize_t				n;
	int				fd, sent = 0, r;
	int				proto;

	proto = v->family == AF_INET ? ETHERTYPE_ARP : ETHERTYPE_IPV6;
	if ((fd = pkt_open(proto, ifp)) == -1)
		return -1;
	if (v->family == AF_INET6) {
		memset(ns, 0, sizeof(ns));
		ns[0] = ND_NS;
		memcpy(ns + 8, v->addr, 16);
		/* the solicited-node group: ff02::1:ff00:0/104 */
		memset(dst, 0, sizeof(dst));
		dst[0] = 0xff;
		dst[1] = 0x02;
		dst[11] = 0x01;
		dst[12] = 0xff;
		memcpy(dst + 13, v->addr + 13, 3);
		dmac[0] = dmac[1] = 0x33;
		memcpy(dmac + 2, dst + 12, 4);
	}
	start = now_usec();
	next = start;
	for (;;) {
		now = now_usec();
		if (now - start >= timeout)
			break;
		if (sent < VIP_PROBES && now >= next) {
			if (v->family == AF_INET)
				r = arp_send(fd, ifp, ARPOP_REQUEST, zero, zero,
				    v->addr);
			else
				r = ip6_send(fd, ifp, dmac, zero, dst, ns,
				    sizeof(ns));
			if (r == -1)
				goto fail;
			sent++;
			next = start + timeout * sent / VIP_PROBES;
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		/* wake up for the next probe, or at the end */
		until = sent < VIP_PROBES ? next : start + timeout;
		r = until > now ? (int)((until - now + 999) / 1000) : 0;
		if ((r = poll(&pfd, 1, r)) == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (r == 0)
			continue;
		fromlen = sizeof(from);
		n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT,
		    (struct sockaddr *)&from, &fromlen);
		if (n == -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			goto fail;
		}
		if (fromlen < sizeof(from) - sizeof(from.sll_addr) ||
		    from.sll_pkttype == PACKET_OUTGOING)
			continue;
		if (v->family == AF_INET ?
		    arp_answer(buf, (size_t)n, v, ifp, mac) :
		    na_answer(buf, (size_t)n, &from, v, ifp, mac)) {
			close(fd);
			return 1;
		}
	}
	close(fd);
	return 0;
fail:
	r = errno;
	close(fd);
	errno = r;
	return -1;
}

/* add */

static void
ann_stop(struct announcer *a)
{
	event_base_loopexit(a->base, NULL);
}

/* ann_timer: the next announcement of the burst, or a refresh. */
static void
ann_timer(evutil_socket_t fd, short what, void *arg)
{
	struct announcer	*a = arg;
	struct timeval		 tv;
	uint64_t		 next;
	int			 r;

	(void)fd;
	(void)what;
	if (a->left == 0) {
		/* a refresh: only while the address is still ours */
		if ((r = addr_held(a->nl, a->vip, a->ifp)) == -1) {
			warn("looking for %s on %s", a->vip->str,
			    a->ifp->name);
		} else if (r == 0) {
			warnx("%s is no longer on %s", a->vip->str,
			    a->ifp->name);
			a->status = EXIT_NO;
			ann_stop(a);
			return;
		} else if (announce(a->pkt, a->vip, a->ifp) == -1)
			warn("announcing %s on %s", a->vip->str, a->ifp->name);
		next = a->refresh;
	} else {
		if (announce(a->pkt, a->vip, a->ifp) == -1) {
			warn("announcing %s on %s", a->vip->str, a->ifp->name);
			a->failed = 1;
		}
		if (a->readyfd != -1) {
			ready_notify(a->readyfd);
			a->readyfd = -1;
		}
		if (--a->left > 0)
			next = a->interval;
		else if (a->refresh != 0)
			next = a->refresh;
		else {
			if (a->failed)
				a->status = EXIT_SYS;
			ann_stop(a);
			return;
		}
	}
	tv.tv_sec = next / 1000000;
	tv.tv_usec = next % 1000000;
	evtimer_add(a->timer, &tv);
}

static void
ann_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	ann_stop(arg);
}

/*
 * wait_usable: poll, for at most VIP_USABLE_US, until the address is no
 * longer tentative.  Past that (duplicate address detection runs after
 * all) the announcement goes out anyway.
 */
static void
wait_usable(int nl, struct vip *v, struct iface *ifp)
{
	const struct timespec	 ms = { 0, 1000000 };
	uint64_t		 start = now_usec();

	while (addr_held(nl, v, ifp) == 2 &&
	    now_usec() - start < VIP_USABLE_US)
		nanosleep(&ms, NULL);
}

static int
cmd_add(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "check", no_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 }
	};
	struct announcer	 a;
	struct vip		 v;
	struct iface		 ifc;
	struct event		*sigterm, *sigint;
	struct timeval		 tv;
	unsigned char		 mac[ETH_ALEN_];
	char			 macbuf[32];
	const char		*e;
	char			*end;
	unsigned long		 n;
	uint64_t		 timeout = VIP_TIMEOUT_US;
	int			 ch, Cflag = 0, xflag = 0, r;

	memset(&a, 0, sizeof(a));
	a.left = VIP_COUNT;
	a.interval = VIP_INTERVAL_US;
	a.readyfd = -1;
	a.pkt = -1;
	while ((ch = getopt_long(argc, argv, "+N:T:d:i:r:x", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'P':
			Cflag = 1;
			break;
		case 'd':
			if ((e = parse_fd(optarg, &a.readyfd)) != NULL)
				errx(EXIT_USAGE, "-d %s: %s", optarg, e);
			break;
		case 'i':
			a.interval = opt_duration(ch, optarg, 1);
			if (a.interval == 0)
				a.interval = 1;
			break;
		case 'N':
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end != '\0' ||
			    errno != 0 || n > 1000)
				errx(EXIT_USAGE, "-N %s: not a count from 0 to "
				    "1000", optarg);
			a.left = (int)n;
			break;
		case 'r':
			a.refresh = opt_duration(ch, optarg, 0);
			break;
		case 'T':
			timeout = opt_duration(ch, optarg, 0);
			break;
		case 'x':
			xflag = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 3 || strcmp(argv[1], "dev") != 0)
		usage();
	if (xflag && a.refresh == 0)
		errx(EXIT_USAGE, "-x needs -r");
	parse_vip(argv[0], 1, &v);
	parse_iface(argv[2], &ifc);
	a.vip = &v;
	a.ifp = &ifc;

	/* every socket first, so that a refusal changes nothing */
	if ((a.nl = nl_open()) == -1)
		die(0, errno, "adding %s on %s", v.str, ifc.name);
	if (ifc.ether && (a.left > 0 || a.refresh != 0) &&
	    (a.pkt = pkt_open(0, &ifc)) == -1)
		die(0, errno, "adding %s on %s", v.str, ifc.name);
	if (Cflag) {
		if (!ifc.ether)
			errx(EXIT_SYS, "%s: not an Ethernet interface",
			    ifc.name);
		if ((r = probe(&v, &ifc, timeout, mac)) == -1)
			die(0, errno, "probing %s on %s", v.astr, ifc.name);
		if (r == 1)
			errx(EXIT_NO, "%s is held by %s on %s: not added",
			    v.astr, fmt_mac(mac, macbuf, sizeof(macbuf)),
			    ifc.name);
	}
	if ((r = addr_change(a.nl, RTM_NEWADDR, &v, &ifc)) == -1)
		die(EXIT_SYS, errno, "adding %s on %s", v.str, ifc.name);
	if (r != 0 && r != EEXIST)
		die(0, r, "adding %s on %s", v.str, ifc.name);
	printf("%s dev %s: %s\n", v.str, ifc.name,
	    r == EEXIST ? "already held" : "added");
	if (fflush(stdout) == EOF)
		err(EXIT_SYS, "stdout");
	/*
	 * The kernel makes a new IPv6 address usable from a work queue,
	 * even without duplicate address detection, and drops what is sent
	 * to it until then: announce only once it is.
	 */
	if (v.family == AF_INET6)
		wait_usable(a.nl, &v, &ifc);

	if (a.pkt == -1) {
		ready_notify(a.readyfd);
		close(a.nl);
		return EXIT_OK;
	}
	if ((a.base = event_base_new()) == NULL ||
	    (a.timer = evtimer_new(a.base, ann_timer, &a)) == NULL ||
	    (sigterm = evsignal_new(a.base, SIGTERM, ann_signal, &a)) ==
	    NULL ||
	    (sigint = evsignal_new(a.base, SIGINT, ann_signal, &a)) == NULL ||
	    evsignal_add(sigterm, NULL) == -1 ||
	    evsignal_add(sigint, NULL) == -1)
		errx(EXIT_SYS, "libevent setup failed");
	if (a.left == 0) {
		/* no burst: refreshes only */
		ready_notify(a.readyfd);
		a.readyfd = -1;
		tv.tv_sec = a.refresh / 1000000;
		tv.tv_usec = a.refresh % 1000000;
		evtimer_add(a.timer, &tv);
	} else
		event_active(a.timer, EV_TIMEOUT, 0);
	a.status = EXIT_OK;
	if (event_base_dispatch(a.base) == -1)
		errx(EXIT_SYS, "event loop failed");

	if (xflag && a.status == EXIT_OK) {
		if ((r = addr_change(a.nl, RTM_DELADDR, &v, &ifc)) == -1)
			die(EXIT_SYS, errno, "deleting %s on %s", v.str,
			    ifc.name);
		if (r != 0 && r != EADDRNOTAVAIL)
			die(0, r, "deleting %s on %s", v.str, ifc.name);
		printf("%s dev %s: %s\n", v.str, ifc.name,
		    r == 0 ? "deleted" : "not held");
	}
	event_free(sigint);
	event_free(sigterm);
	event_free(a.timer);
	event_base_free(a.base);
	close(a.pkt);
	close(a.nl);
	return a.status;
}

static int
cmd_del(int argc, char **argv)
{
	struct vip	 v;
	struct iface	 ifc;
	int		 nl, r;

	if (getopt(argc, argv, "+") != -1)
		usage();
	argc -= optind;
	argv += optind;
	if (argc != 3 || strcmp(argv[1], "dev") != 0)
		usage();
	parse_vip(argv[0], 1, &v);
	parse_iface(argv[2], &ifc);
	if ((nl = nl_open()) == -1)
		die(0, errno, "deleting %s on %s", v.str, ifc.name);
	if ((r = addr_change(nl, RTM_DELADDR, &v, &ifc)) == -1)
		die(EXIT_SYS, errno, "deleting %s on %s", v.str, ifc.name);
	if (r != 0 && r != EADDRNOTAVAIL)
		die(0, r, "deleting %s on %s", v.str, ifc.name);
	close(nl);
	printf("%s dev %s: %s\n", v.str, ifc.name,
	    r == 0 ? "deleted" : "not held");
	return EXIT_OK;
}

static int
cmd_check(int argc, char **argv)
{
	struct vip	 v;
	struct iface	 ifc;
	unsigned char	 mac[ETH_ALEN_];
	char		 macbuf[32];
	uint64_t	 timeout = VIP_TIMEOUT_US;
	int		 ch, r;

	while ((ch = getopt(argc, argv, "+T:")) != -1) {
		switch (ch) {
		case 'T':
			timeout = opt_duration(ch, optarg, 0);
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 3 || strcmp(argv[1], "dev") != 0)
		usage();
	parse_vip(argv[0], 0, &v);
	parse_iface(argv[2], &ifc);
	if (!ifc.ether)
		errx(EXIT_SYS, "%s: not an Ethernet interface", ifc.name);
	if ((r = probe(&v, &ifc, timeout, mac)) == -1)
		die(0, errno, "probing %s on %s", v.astr, ifc.name);
	if (r == 1) {
		printf("%s: held by %s\n", v.astr,
		    fmt_mac(mac, macbuf, sizeof(macbuf)));
		return EXIT_NO;
	}
	printf("%s: free\n", v.astr);
	return EXIT_OK;
}

struct show_arg {
	int	index;
};

static int
show_fn(struct nlmsghdr *nh, void *arg)
{
	struct show_arg		*s = arg;
	struct ifaddrmsg	*ifa = NLMSG_DATA(nh);
	const unsigned char	*a;
	char			 abuf[INET6_ADDRSTRLEN], name[IF_NAMESIZE];

	if (s->index != 0 && (int)ifa->ifa_index != s->index)
		return 0;
	if (ifa->ifa_scope != RT_SCOPE_UNIVERSE &&
	    ifa->ifa_scope != RT_SCOPE_SITE)
		return 0;
	if (ifa->ifa_family == AF_INET)
		a = addr_attr(nh, 4);
	else if (ifa->ifa_family == AF_INET6)
		a = addr_attr(nh, 16);
	else
		return 0;
	if (a == NULL || inet_ntop(ifa->ifa_family, a, abuf,
	    sizeof(abuf)) == NULL ||
	    if_indextoname(ifa->ifa_index, name) == NULL)
		return 0;
	printf("%s/%u dev %s\n", abuf, ifa->ifa_prefixlen, name);
	return 0;
}

static int
cmd_show(int argc, char **argv)
{
	struct iface	 ifc;
	struct show_arg	 s = { 0 };
	int		 nl;

	if (getopt(argc, argv, "+") != -1)
		usage();
	argc -= optind;
	argv += optind;
	if (argc == 2 && strcmp(argv[0], "dev") == 0) {
		parse_iface(argv[1], &ifc);
		s.index = ifc.index;
	} else if (argc != 0)
		usage();
	if ((nl = nl_open()) == -1 || nl_dump(nl, AF_UNSPEC, show_fn, &s) == -1)
		die(0, errno, "listing addresses");
	close(nl);
	return EXIT_OK;
}

int
main(int argc, char *argv[])
{
	const char	*cmd;
	int		 status;

	if (argc < 2)
		usage();
	cmd = argv[1];
	/* getopt(3) names argv[0] in its messages: that is still vipctl */
	argv[1] = argv[0];
	argc--;
	argv++;
	optind = 1;
	if (strcmp(cmd, "add") == 0)
		status = cmd_add(argc, argv);
	else if (strcmp(cmd, "del") == 0)
		status = cmd_del(argc, argv);
	else if (strcmp(cmd, "check") == 0)
		status = cmd_check(argc, argv);
	else if (strcmp(cmd, "show") == 0)
		status = cmd_show(argc, argv);
	else
		usage();
	if (fflush(stdout) == EOF || ferror(stdout))
		err(EXIT_SYS, "stdout");
	return status;
}
