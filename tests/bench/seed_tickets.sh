#!/usr/bin/env bash
# tests/bench/seed_tickets.sh — fill a Kefu database with tickets quickly, for list benchmarks.
#
#   tests/bench/seed_tickets.sh TOTAL [mariadb client options...] DATABASE
#   e.g. tests/bench/seed_tickets.sh 1000000 --no-defaults --socket=/tmp/x/mysqld.sock -uroot kefu
#
# Adds tickets until the ticket table holds TOTAL rows (nothing when it already does). Rows are
# generated inside MariaDB by INSERT ... SELECT from the SEQUENCE engine's seq_1_to_N tables, in
# transactions of SEED_BATCH rows (default 100000), with foreign-key and unique checks off for the
# session (the rows are valid by construction). Each call also creates one new customer (with an
# e-mail identity) per 10 new tickets.
#
# The tickets go to the existing queues in turn (to four new queues seed-1..seed-4 when there are
# none) and look like a year of history: created over the last 366 days, updated up to a day
# later, status spread 5% new, 10% open, 5% pending, 30% solved, 50% closed (solved_at,
# closed_at and first_response_at filled accordingly), priority 10% low, 70% normal, 15% high,
# 5% urgent, channel email/web/wechat/phone/api. They have no messages, events or tags: the list
# queries this is for read only ticket and customer. ANALYZE TABLE runs at the end.
set -euo pipefail

if (($# < 2)) || ! [[ $1 =~ ^[0-9]+$ ]]; then
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
TOTAL=$1
shift
BATCH=${SEED_BATCH:-100000}
if ! [[ $BATCH =~ ^[1-9][0-9]*$ ]]; then
    echo "seed_tickets: SEED_BATCH must be a positive integer" >&2
    exit 2
fi

sql() { mariadb "$@" -N -B; }
q() { sql "${CLIENT[@]}" -e "$1"; }
CLIENT=("$@")

have=$(q "SELECT COUNT(*) FROM ticket")
need=$((TOTAL - have))
if ((need <= 0)); then
    echo "seed_tickets: ticket already holds $have rows (>= $TOTAL); nothing to do"
    exit 0
fi

# Queues: the existing ones, else four new ones.
queues=$(q "SELECT GROUP_CONCAT(id ORDER BY id) FROM queue")
if [[ -z $queues || $queues == NULL ]]; then
    q "INSERT INTO queue (name, slug) VALUES ('Seed 1','seed-1'), ('Seed 2','seed-2'),
       ('Seed 3','seed-3'), ('Seed 4','seed-4')"
    queues=$(q "SELECT GROUP_CONCAT(id ORDER BY id) FROM queue")
fi
nq=$(tr ',' '\n' <<<"$queues" | wc -l)

# Customers: one per 10 new tickets, explicit ids above the current maximum.
ncust=$(((need + 9) / 10))
c0=$(q "SELECT COALESCE(MAX(id), 0) FROM customer")
t_start=$(date +%s.%N)
echo "seed_tickets: adding $need tickets (to $TOTAL) in queues $queues and $ncust customers"

# seq_1_to_N tables exist for any N; batches of at most BATCH rows.
customer_batch() { # OFFSET COUNT
    cat <<SQL
INSERT INTO customer (id, name, primary_email, locale, created_at, updated_at)
SELECT $c0 + $1 + seq, CONCAT('Seed Customer ', $c0 + $1 + seq),
       CONCAT('seed', $c0 + $1 + seq, '@seed.example'), 'en',
       NOW(6) - INTERVAL 400 DAY, NOW(6) - INTERVAL 400 DAY
FROM seq_1_to_$2;
INSERT INTO customer_identity (customer_id, kind, value, created_at)
SELECT $c0 + $1 + seq, 'email', CONCAT('seed', $c0 + $1 + seq, '@seed.example'),
       NOW(6) - INTERVAL 400 DAY
FROM seq_1_to_$2;
SQL
}

# n runs over 1..need; created_at spreads the new tickets evenly over the last 366 days.
ticket_batch() { # OFFSET COUNT
    cat <<SQL
INSERT INTO ticket (subject, status, priority, channel, channel_account, customer_id, queue_id,
                    tags, created_at, updated_at, first_response_at, solved_at, closed_at, version)
SELECT CONCAT('Seeded ticket ', s.n, ': order ', CRC32(s.n) % 1000000, ' has not arrived'),
       s.st, s.pr, s.ch, '', $c0 + 1 + (s.n % $ncust), ELT(1 + s.n % $nq, $queues), '[]',
       s.ca, s.ua,
       IF(s.st = 'new', NULL, LEAST(s.ua, s.ca + INTERVAL 10 MINUTE)),
       IF(s.st IN ('solved', 'closed'), s.ua, NULL),
       IF(s.st = 'closed', s.ua, NULL),
       1 + (s.h % 5)
FROM (SELECT x.n, x.h,
             ELT(1 + x.h % 20, 'new', 'open', 'open', 'pending', 'solved', 'solved', 'solved',
                 'solved', 'solved', 'solved', 'closed', 'closed', 'closed', 'closed', 'closed',
                 'closed', 'closed', 'closed', 'closed', 'closed') AS st,
             ELT(1 + (x.h DIV 20) % 20, 'low', 'low', 'normal', 'normal', 'normal', 'normal',
                 'normal', 'normal', 'normal', 'normal', 'normal', 'normal', 'normal', 'normal',
                 'normal', 'normal', 'high', 'high', 'high', 'urgent') AS pr,
             ELT(1 + (x.h DIV 400) % 5, 'email', 'web', 'wechat', 'phone', 'api') AS ch,
             @t0 + INTERVAL (x.n * @step) MICROSECOND AS ca,
             @t0 + INTERVAL (x.n * @step) MICROSECOND + INTERVAL (x.h % 86400) SECOND AS ua
      FROM (SELECT $1 + seq AS n, CRC32($1 + seq) AS h FROM seq_1_to_$2) x) s;
SQL
}

{
    echo "SET SESSION foreign_key_checks = 0, unique_checks = 0;"
    echo "SET @t0 = NOW(6) - INTERVAL 366 DAY;"
    echo "SET @step = FLOOR(365 * 86400 * 1000000 / $need);"
    for ((off = 0; off < ncust; off += BATCH)); do
        n=$((ncust - off < BATCH ? ncust - off : BATCH))
        echo "START TRANSACTION;"
        customer_batch "$off" "$n"
        echo "COMMIT;"
    done
    for ((off = 0; off < need; off += BATCH)); do
        n=$((need - off < BATCH ? need - off : BATCH))
        echo "START TRANSACTION;"
        ticket_batch "$off" "$n"
        echo "COMMIT;"
        echo "SELECT CONCAT('seed_tickets: ', $off + $n, ' / $need tickets');"
    done
    echo "ANALYZE TABLE customer, customer_identity, ticket;"
} | sql "${CLIENT[@]}" --unbuffered | { grep '^seed_tickets:' || true; }

t_end=$(date +%s.%N)
awk -v a="$t_start" -v b="$t_end" -v n="$need" -v t="$(q "SELECT COUNT(*) FROM ticket")" \
    'BEGIN { printf "seed_tickets: %d tickets added in %.1f s (%.0f/s); ticket now holds %d rows\n",
             n, b - a, n / (b - a), t }'
