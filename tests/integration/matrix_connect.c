/*
 * One outward connection for tests/integration/test_isolation_matrix.py, built
 * there with cc and installed setuid root: the service account runs it the way
 * it would run ping or newuidmap, so the socket is owned by uid 0 while the
 * account's gid stays the socket's group.
 *
 *     matrix_connect tcp|udp ADDRESS PORT SOURCE_PORT
 *
 * Binds SOURCE_PORT (the marker the receiver's witness counts), then connects
 * (tcp, 0.5 s) or sends one datagram (udp). Prints connected, timeout, sent or
 * the errno name, and the socket's owner as "uid=U gid=G" on a second line.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *name(int err)
{
	switch (err) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case ECONNREFUSED: return "rejected";
	case ENETUNREACH: return "unreachable";
	case EHOSTUNREACH: return "unreachable";
	default: return strerror(err);
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_storage to = {0}, from = {0};
	socklen_t length;
	int tcp, fd, err = 0;

	if (argc != 5) {
		fprintf(stderr, "usage: %s tcp|udp ADDRESS PORT SOURCE_PORT\n", argv[0]);
		return 2;
	}
	tcp = strcmp(argv[1], "tcp") == 0;
	if (strchr(argv[2], ':')) {
		struct sockaddr_in6 *a = (void *)&to, *b = (void *)&from;
		a->sin6_family = b->sin6_family = AF_INET6;
		a->sin6_port = htons(atoi(argv[3]));
		b->sin6_port = htons(atoi(argv[4]));
		inet_pton(AF_INET6, argv[2], &a->sin6_addr);
		length = sizeof(*a);
	} else {
		struct sockaddr_in *a = (void *)&to, *b = (void *)&from;
		a->sin_family = b->sin_family = AF_INET;
		a->sin_port = htons(atoi(argv[3]));
		b->sin_port = htons(atoi(argv[4]));
		inet_pton(AF_INET, argv[2], &a->sin_addr);
		length = sizeof(*a);
	}
	fd = socket(to.ss_family, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (void *)&from, length) < 0) {
		printf("%s\n", name(errno));
		return 1;
	}
	if (!tcp) {
		if (sendto(fd, "matrix", 6, 0, (void *)&to, length) < 0)
			err = errno;
		printf("%s\n", err ? name(err) : "sent");
	} else {
		fcntl(fd, F_SETFL, O_NONBLOCK);
		if (connect(fd, (void *)&to, length) < 0 && errno != EINPROGRESS) {
			err = errno;
		} else {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			socklen_t size = sizeof(err);
			if (poll(&p, 1, 500) == 0)
				err = ETIMEDOUT;
			else
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size);
		}
		printf("%s\n", err == ETIMEDOUT ? "timeout" : err ? name(err) : "connected");
	}
	printf("uid=%u gid=%u\n", geteuid(), getegid());
	return 0;
}
