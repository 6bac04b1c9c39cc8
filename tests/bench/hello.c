/* tests/bench/hello.c — the baseline for tests/bench/bench.sh: the barest libevent evhttp server,
 * one thread, answering every request with 200 {"status":"ok"}.
 *
 *   cc -O2 -o hello hello.c $(pkg-config --cflags --libs libevent)
 *   ./hello [ADDR [PORT]]     (default 127.0.0.1 0; prints "listening ADDR:PORT" once bound)
 *
 * SIGINT / SIGTERM stop it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

static const char body[] = "{\"status\":\"ok\"}";

static void on_request(struct evhttp_request *req, void *arg) {
    (void)arg;
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evbuffer_add(out, body, sizeof body - 1);
    evhttp_send_reply(req, 200, "OK", NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)sig;
    (void)what;
    event_base_loopexit((struct event_base *)arg, NULL);
}

int main(int argc, char **argv) {
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1";
    int port = argc > 2 ? atoi(argv[2]) : 0;

    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    struct evhttp *http = base ? evhttp_new(base) : NULL;
    if (!http) {
        fprintf(stderr, "hello: cannot create event base\n");
        return 1;
    }
    evhttp_set_gencb(http, on_request, NULL);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(http, addr, (ev_uint16_t)port);
    if (!bound) {
        fprintf(stderr, "hello: cannot bind %s:%d\n", addr, port);
        return 1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &len) != 0) {
        perror("hello: getsockname");
        return 1;
    }
    int real_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    printf("listening %s:%d\n", addr, real_port);
    fflush(stdout);

    struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);

    event_base_dispatch(base);

    event_free(sigint);
    event_free(sigterm);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
