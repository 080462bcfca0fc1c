# Promises of README.md that no other file tries hard to break, attacked
# here as an operator and an attacker would:
#
# - ticket_counter batch=: "a batch that would pass max (or the end of the
#   number range) is 410 and takes nothing", at the very ends of the ranges
#   (2^56-1 tickets on a local zone, 2^64-1 reached through start= and
#   max=, 2^63-1 on a Redis zone), one request at a time and raced by many
#   clients over two workers with every count from 1 to 9: a first + count
#   that wraps around would hand out low numbers again.
# - ticket_zone: "when a reload changes the size, the counters are carried
#   over into the new zone": a reload that shrinks a zone below the keys it
#   holds, then one that shrinks it to a size that fits them. No key may
#   start again at its start.
# - Durability: batches larger than reserve= (a block each, the first one
#   of a new key too), raced over two workers, then a clean stop and a
#   start: "the next start goes on with no gap", never twice.
# - "HEAD answers the headers and takes none", also for count=, a new key
#   of a durable zone and a Redis zone.
# - "A Redis zone's name may only hold letters, digits, _, . and -": a name
#   with ";" (the separator of the counters' metadata hashes) stops nginx.
# - The admin API and status pages show max= as configured, also 2^64-1.
# - "Passwords never appear in the error log", also for a misspelled redis=.
# - While a reload shrinks a zone, no key is made that the new zone could
#   not hold (it would start again from start= later).
# - A redis= that reaches something else (a web server): 503, logged, no
#   ticket, no crash.
#
# As in t/009-durable.t, use_hup() makes a --- must_die block the only way
# nginx stops, in every mode: the block after it starts nginx afresh (its
# "counters restored from" notice shows it). Zones are named after the
# block that declares them (p1, p2, ...). A block's --- after section is
# Perl run after its last response (t/lib/AfterBlock.pm), with the helpers
# below: ask(), race(), check_range(), reload_with(); every socket and wait
# is bounded, loopback only.
use lib 't/lib';
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Math::BigInt;
use POSIX ();
use Test::More;
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(sleep time);
use AfterBlock;
use Parked;
use RedisServer;
use Steps;

# Outside the server root, which the runner wipes between blocks.
$ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-promises-XXXXXX', TMPDIR => 1, CLEANUP => 1);
$ENV{TEST_NGINX_REDIS_PORT} = 16519;
RedisServer::start(port => $ENV{TEST_NGINX_REDIS_PORT});

# valgrind makes everything slower
our $Slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 6 : 1;
our $Name = '';
our %Last;    # last ticket of a counter, from one block to a later one

# "STATUS BODY" of one request on a connection of its own.
sub ask {
    my ($method, $uri) = @_;
    my ($status, $body) = Steps::request($method, $uri);
    return "$status $body";
}

# As ask(), but a 503 "try again" (a worker whose zone a reload replaced)
# is asked again, for at most 30 s.
sub ask_settled {
    my ($method, $uri) = @_;
    my $deadline = time + 30 * $Slow;
    while (1) {
        my $got = ask($method, $uri);
        return $got if $got ne "503 try again\n" || time > $deadline;
        sleep 0.1;
    }
}

# Concurrent keep-alive clients: $clients processes, each opening $conns
# connections one after another and pipelining $reqs GETs on each; request
# $i (from 1) of client $c is for $uri_of->($c, $i). Returns [URI, STATUS,
# BODY without its newline] for every answer; a missing answer or a
# client's error is returned as [URI, 'missing' or 'error', TEXT].
sub race {
    my ($clients, $conns, $reqs, $uri_of) = @_;
    my $port = Test::Nginx::Socket::server_port_for_client();
    my @kids;
    for my $c (1 .. $clients) {
        pipe(my $reader, my $writer) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $reader;
            my $ok = eval {
                for my $n (1 .. $conns) {
                    my @uris = map { $uri_of->($c, ($n - 1) * $reqs + $_) } 1 .. $reqs;
                    my $sock = IO::Socket::INET->new(
                        PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
                        Timeout => 10 * $Slow,
                    ) or die "connect: $!";
                    my $req = '';
                    for my $i (0 .. $#uris) {
                        my $close = $i == $#uris ? "Connection: close\r\n" : '';
                        $req .= "GET $uris[$i] HTTP/1.1\r\nHost: localhost\r\n$close\r\n";
                    }
                    print $sock $req;
                    my $raw = Parked::read_all($sock, 30 * $Slow);
                    close $sock;
                    for my $uri (@uris) {
                        if ($raw =~ s{\AHTTP/1\.1 (\d+)[^\r]*\r\n((?:[^\r]+\r\n)*)\r\n}{}) {
                            my ($status, $head) = ($1, $2);
                            my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
                            my $body = substr($raw, 0, $len // 0, '');
                            $body =~ s/\n\z//;
                            $body =~ s/\n/\\n/g;
                            print $writer "$uri\t$status\t$body\n";
                        } else {
                            print $writer "$uri\tmissing\t\n";
                        }
                    }
                }
                1;
            };
            unless ($ok) {
                (my $err = $@) =~ s/\s+/ /g;
                print $writer "-\terror\t$err\n";
            }
            close $writer;
            POSIX::_exit(0);
        }
        close $writer;
        push @kids, [$pid, $reader];
    }
    my @answers;
    for my $kid (@kids) {
        my ($pid, $reader) = @$kid;
        while (my $line = <$reader>) {
            chomp $line;
            push @answers, [split /\t/, $line, 3];
        }
        close $reader;
        waitpid $pid, 0;
    }
    return @answers;
}

# The tickets of a ticket body: "N" or "FIRST LAST" (text), as big integers.
sub tickets_of {
    my ($body) = @_;
    return (Math::BigInt->new($1), Math::BigInt->new($2)) if $body =~ /^(\d+) (\d+)\z/;
    return (Math::BigInt->new($1), Math::BigInt->new($1)) if $body =~ /^(\d+)\z/;
    return;
}

# The 200 answers' tickets, [FIRST, LAST] pairs, together are exactly
# $lo..$hi, each once (decimal strings: the top of u64 is past Perl's
# integers). Reports the first problems.
sub check_range {
    my ($what, $lo, $hi, @pairs) = @_;
    my @sorted = sort { $a->[0] <=> $b->[0] } @pairs;
    my $next = Math::BigInt->new($lo);
    my @wrong;
    for my $p (@sorted) {
        push @wrong, "$p->[0]..$p->[1] where $next was next" if $p->[0] != $next;
        $next = $p->[1] + 1 if $p->[1] >= $next;
    }
    my $end = $next - 1;
    push @wrong, "the last ticket is $end, not $hi" if $end != Math::BigInt->new($hi);
    is(join('; ', @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]), '',
       "$Name - $what: tickets $lo..$hi, each once, nothing past the end");
}

# Checks a race's answers for one location: each 200 holds as many tickets
# as its count= asked; every other answer is 410 "sold out". Returns the
# [FIRST, LAST] pairs.
sub batches_of {
    my ($what, @answers) = @_;
    my (@pairs, @wrong);
    for my $a (@answers) {
        my ($uri, $status, $body) = @$a;
        my ($count) = $uri =~ /count=(\d+)/;
        $count //= 1;
        if ($status eq '200') {
            my @t = tickets_of($body) or do { push @wrong, "$uri: 200 \"$body\""; next };
            push @wrong, "$uri: $t[0]..$t[1] is not $count tickets" if $t[1] - $t[0] + 1 != $count;
            push @pairs, [@t];
        } elsif ($status ne '410' || $body ne 'sold out') {
            push @wrong, "$uri: $status \"$body\"";
        }
    }
    is(join('; ', @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]), '',
       "$Name - $what: every answer is a whole batch or 410 sold out");
    return @pairs;
}

# Takes one ticket at a time until 410 (at most $most), as [FIRST, LAST].
sub drain {
    my ($uri, $most) = @_;
    my @pairs;
    for (1 .. $most) {
        my $got = ask(GET => $uri);
        last if $got eq "410 sold out\n";
        if ($got =~ /^200 (\d+)(?: (\d+))?\n\z/) {
            push @pairs, [Math::BigInt->new($1), Math::BigInt->new($2 // $1)];
            next;
        }
        fail("$Name - drain $uri: $got");
        last;
    }
    return @pairs;
}

# Rewrites the running nginx's configuration ($from to $to, which must be
# there) and reloads it with HUP; returns once the error log, from before
# the HUP, matches $until (or fails after 60 s), with what matched.
sub reload_with {
    my ($from, $to, $until) = @_;
    my $conf = $Test::Nginx::Util::ConfFile;
    open my $in, '<', $conf or die "$conf: $!";
    my $text = do { local $/; <$in> };
    close $in;
    $text =~ s/\Q$from\E/$to/ or die "\"$from\" is not in $conf";
    open my $out, '>', $conf or die "$conf: $!";
    print $out $text;
    close $out or die "$conf: $!";
    my $log = $Test::Nginx::Util::ErrLogFile;
    my $offset = -s $log // 0;
    open my $pidfh, '<', $Test::Nginx::Util::PidFile or die "pid file: $!";
    chomp(my $master = <$pidfh>);
    close $pidfh;
    kill 'HUP', $master or die "HUP $master: $!";
    my $deadline = time + 60 * $Slow;
    while (time < $deadline) {
        if (open my $lf, '<', $log) {
            seek $lf, $offset, 0;
            my $new = do { local $/; <$lf> } // '';
            close $lf;
            return $1 // $& if $new =~ $until;
        }
        sleep 0.1;
    }
    fail("$Name - the reload to \"$to\" logged nothing like $until");
    return undef;
}

# evaled here so that it sees this file's variables and subs
AfterBlock::install(after => \$Name, sub { eval $_[0] });

use_hup();
check_accum_error_log();
workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: batch=, a local zone at 2^56-1: a batch past the end is 410 and takes nothing, the rest to the last ticket
# README: "a batch that would pass max (or the end of the number range) is
# 410 and takes nothing"; a local zone's range is 2^56-1 tickets.
--- http_config
    ticket_zone p1:1m;
--- config
    location = /b { ticket_counter zone=p1 key=$arg_k batch=100; }
    location = /j { ticket_counter zone=p1 key=$arg_k batch=100 format=json; }
    location = /admin { ticket_admin zone=p1; }
--- pipelined_requests eval
["POST /admin?key=a&next=72057594037927931", "GET /b?k=a&count=6", "GET /b?k=a&count=100",
 "GET /admin?key=a", "GET /j?k=a&count=3", "GET /b?k=a&count=3", "GET /b?k=a&count=2",
 "GET /b?k=a", "GET /b?k=a&count=1", "GET /j?k=a&count=100", "GET /admin?key=a"]
--- error_code eval
[200, 410, 410, 200, 200, 410, 200, 410, 410, 410, 200]
--- response_body_like eval
[qr/"next":72057594037927931,/, qr/^sold out\n\z/, qr/^sold out\n\z/,
 qr/^\{"key":"a","start":1,"issued":72057594037927930,"last":72057594037927930,"next":72057594037927931,"max":null,"used":\d+\}\n\z/,
 qr/^\{"first":72057594037927931,"last":72057594037927933,"count":3\}\n?\z/, qr/^sold out\n\z/,
 qr/^72057594037927934 72057594037927935\n\z/, qr/^sold out\n\z/, qr/^sold out\n\z/, qr/^sold out\n\z/,
 qr/^\{"key":"a","start":1,"issued":72057594037927935,"last":72057594037927935,"next":72057594037927936,"max":null,"used":\d+,"sold_out":true\}\n\z/]
--- no_error_log
[alert]



=== TEST 2: batch=, the top of u64 reached through start= and max=: no first + count wraps around to low numbers
# README: the same promise, where start + count - 1 does not fit in 64 bits
# (start=18446744073709551610 leaves 6 tickets); with max=2^64-1; and
# width=20 (the most) on a batch there.
--- http_config
    ticket_zone p2:1m;
--- config
    location = /b { ticket_counter zone=p2 key=$arg_k start=18446744073709551610 batch=100; }
    location = /m { ticket_counter zone=p2 key=$arg_k start=18446744073709551600 max=18446744073709551615 batch=100 format=json; }
    location = /w { ticket_counter zone=p2 key=$arg_k start=18446744073709551612 batch=10 width=20; }
    location = /admin { ticket_admin zone=p2; }
--- pipelined_requests eval
["GET /b?k=a&count=7", "GET /b?k=a&count=100", "GET /b?k=a&count=4", "GET /b?k=a&count=3",
 "GET /b?k=a&count=2", "GET /b?k=a", "GET /b?k=a&count=1", "GET /admin?key=a",
 "GET /m?k=b&count=17", "GET /m?k=b&count=16", "GET /m?k=b", "GET /admin?key=b",
 "GET /w?k=c&count=5", "GET /w?k=c&count=4", "GET /w?k=c",
 "GET /admin?key=x", "GET /b?k=x&count=6", "GET /b?k=x"]
--- error_code eval
[410, 410, 200, 410, 200, 410, 410, 200, 410, 200, 410, 200, 410, 200, 410, 404, 200, 410]
--- response_body_like eval
[qr/^sold out\n\z/, qr/^sold out\n\z/, qr/^18446744073709551610 18446744073709551613\n\z/, qr/^sold out\n\z/,
 qr/^18446744073709551614 18446744073709551615\n\z/, qr/^sold out\n\z/, qr/^sold out\n\z/,
 qr/^\{"key":"a","start":18446744073709551610,"issued":6,"last":18446744073709551615,"next":null,"max":null,"used":\d+,"sold_out":true\}\n\z/,
 qr/^sold out\n\z/, qr/^\{"first":18446744073709551600,"last":18446744073709551615,"count":16\}\n?\z/, qr/^sold out\n\z/,
 qr/"issued":16,"last":18446744073709551615,"next":null,"max":\d+,"used":\d+,"sold_out":true\}\n\z/,
 qr/^sold out\n\z/, qr/^18446744073709551612 18446744073709551615\n\z/, qr/^sold out\n\z/,
 qr/^\{"error":"no such counter"\}\n\z/, qr/^18446744073709551610 18446744073709551615\n\z/, qr/^sold out\n\z/]
--- no_error_log
[alert]



=== TEST 3: batch= raced at both ends by many clients over two workers: every ticket once, none past the end, refused batches take nothing
# README: "a batch that would pass max (or the end of the number range) is
# 410 and takes nothing", and tickets are never issued twice across
# workers. Counts 1 to 9 race for the last 400 tickets of a local zone's
# range (2^56-1) and of u64 (start=); what is left is then taken one at a
# time: together exactly the 400, so no refused batch took a number.
--- http_config
    ticket_zone p3:1m;
--- config
    location = /b { ticket_counter zone=p3 batch=9; }
    location = /u { ticket_counter zone=p3 key=top start=18446744073709551216 batch=9; }
    location = /admin { ticket_admin zone=p3; }
--- request
POST /admin?next=72057594037927536
--- response_body_like: "next":72057594037927536,
--- timeout: 120
--- after
my @answers = race(4, 5, 12, sub {
    my ($c, $i) = @_;
    my $count = 1 + ($c * 5 + $i * 7) % 9;
    return ($i % 2 ? '/b' : '/u') . "?count=$count";
});
is(scalar(grep { $_->[1] =~ /^(missing|error)$/ } @answers), 0, "$Name - every request answered")
    or diag(join "\n", map { "@$_" } grep { $_->[1] =~ /^(missing|error)$/ } @answers[0 .. 9]);
is(scalar(@answers), 4 * 5 * 12, "$Name - " . scalar(@answers) . " answers");
my @low = batches_of('2^56-1', grep { $_->[0] =~ m{^/b} } @answers);
my @top = batches_of('2^64-1', grep { $_->[0] =~ m{^/u} } @answers);
ok(scalar(grep { $_->[1] eq '410' } @answers) > 0, "$Name - the race ran both counters out");
push @low, drain('/b', 20);
push @top, drain('/u', 20);
check_range('the end of the local range', '72057594037927536', '72057594037927935', @low);
check_range('the end of u64', '18446744073709551216', '18446744073709551615', @top);
like(ask(GET => '/admin'), qr/"issued":72057594037927935,"last":72057594037927935,"next":72057594037927936,.*"sold_out":true/,
     "$Name - the default counter is sold out at its last ticket");
like(ask(GET => '/admin?key=top'), qr/"issued":400,"last":18446744073709551615,"next":null,.*"sold_out":true/,
     "$Name - top is sold out at 2^64-1");
--- no_error_log
[alert]



=== TEST 4: batch=, a Redis zone at 2^63-1: a batch past the end is 410 and leaves Redis as it was; raced over two workers, every ticket once
# README: "Tickets end at 2^63-1 (Redis integers): there a counter answers
# 410", "a count=K batch is all-or-nothing", and a batch that would pass
# the end takes nothing. A batch of requests with mixed counts goes to
# Redis in one script: the ones that do not fit take nothing.
--- http_config
    ticket_zone p4:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /b { ticket_counter zone=p4 key=$arg_k batch=9; }
--- request
GET /b?k=first
--- response_body
1
--- timeout: 120
--- after
my $port = $ENV{TEST_NGINX_REDIS_PORT};
is(RedisServer::cli($port, undef, qw(SET ticket:p4:a 9223372036854775800)), 'OK', "$Name - a has 7 tickets left");
is(ask(GET => '/b?k=a&count=8'), "410 sold out\n", "$Name - count=8 is 410");
is(ask(GET => '/b?k=a&count=9'), "410 sold out\n", "$Name - count=9 is 410");
is(RedisServer::cli($port, undef, qw(GET ticket:p4:a)), '9223372036854775800', "$Name - and took nothing in Redis");
is(ask(GET => '/b?k=a&count=5'), "200 9223372036854775801 9223372036854775805\n", "$Name - count=5");
is(ask(GET => '/b?k=a&count=3'), "410 sold out\n", "$Name - count=3 past the end is 410");
is(ask(GET => '/b?k=a&count=2'), "200 9223372036854775806 9223372036854775807\n", "$Name - the last two");
is(ask(GET => '/b?k=a'), "410 sold out\n", "$Name - then 410");
is(ask(GET => '/b?k=a&count=1'), "410 sold out\n", "$Name - count=1 too");
is(RedisServer::cli($port, undef, qw(GET ticket:p4:a)), '9223372036854775807', "$Name - Redis holds 2^63-1");

is(RedisServer::cli($port, undef, qw(SET ticket:p4:r 9223372036854775407)), 'OK', "$Name - r has 400 tickets left");
my @answers = race(4, 4, 12, sub {
    my ($c, $i) = @_;
    return '/b?k=r&count=' . (1 + ($c * 5 + $i * 7) % 9);
});
is(scalar(grep { $_->[1] =~ /^(missing|error)$/ } @answers), 0, "$Name - every request answered")
    or diag(join "\n", map { "@$_" } grep { $_->[1] =~ /^(missing|error)$/ } @answers[0 .. 9]);
my @pairs = batches_of('2^63-1', @answers);
ok(scalar(grep { $_->[1] eq '410' } @answers) > 0, "$Name - the race ran r out");
push @pairs, drain('/b?k=r', 20);
check_range('the end of the Redis range', '9223372036854775408', '9223372036854775807', @pairs);
is(RedisServer::cli($port, undef, qw(GET ticket:p4:r)), '9223372036854775807', "$Name - Redis holds 2^63-1");
--- no_error_log
[alert]



=== TEST 5: a reload that shrinks a zone below its keys must not start any key again; one that shrinks it to a size that fits carries every counter
# README: "The zone is reused by nginx -s reload with its counters; when a
# reload changes the size, the counters are carried over into the new
# zone." 200 keys are in a 1m zone; a reload to 32k (room for about 117)
# cannot carry them: whatever nginx does, no key may go back to 1. Then a
# reload to 128k, which fits them, carries every one.
--- http_config
    ticket_zone p5:1m;
--- config
    location = /k { ticket_counter zone=p5 key=$arg_k; }
    location = /t { ticket_counter zone=p5; }
    location = /s { ticket_status zone=p5; }
--- pipelined_requests eval
[(map { "GET /k?k=key$_" } 1 .. 200), "GET /t"]
--- response_body eval
[("1\n") x 201]
--- timeout: 120
--- after
my $refused = reload_with('ticket_zone p5:1m;', 'ticket_zone p5:32k;',
                          qr/ticket zone "p5" (?:is too small[^\n]*|resized[^\n]*)/);
like($refused // '', qr/ticket zone "p5" is too small for the 200 keys it holds, it fits \d+/,
     "$Name - the reload to 32k is refused, naming the zone");
sleep 1 * $Slow;    # a refused reload leaves the old workers serving
my @wrong = grep { $_->[1] ne "200 2\n" } map { [$_, ask_settled(GET => "/k?k=key$_")] } 1 .. 200;
is(scalar(@wrong), 0, "$Name - after the refused reload every key goes on at 2")
    or diag(join '; ', map { "key$_->[0]: $_->[1]" } @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]);
is(ask_settled(GET => '/t'), "200 2\n", "$Name - the default counter too");

my $carried = reload_with('ticket_zone p5:32k;', 'ticket_zone p5:128k;',
                          qr/ticket zone "p5" (?:is too small[^\n]*|resized[^\n]*)/);
like($carried // '', qr/ticket zone "p5" resized: 201 counters carried over/, "$Name - the reload to 128k carries 201 counters");
my $deadline = time + 30 * $Slow;
my $page = '';
while (time < $deadline) {
    $page = ask_settled(GET => '/s');
    last if $page =~ /"size":131072\}/;
    sleep 0.1;
}
like($page, qr/"keys":200,"size":131072\}/, "$Name - the new workers serve the 128k zone with 200 keys");
@wrong = grep { $_->[1] ne "200 3\n" } map { [$_, ask_settled(GET => "/k?k=key$_")] } 1 .. 200;
is(scalar(@wrong), 0, "$Name - in the 128k zone every key goes on at 3")
    or diag(join '; ', map { "key$_->[0]: $_->[1]" } @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]);
is(ask_settled(GET => '/t'), "200 3\n", "$Name - the default counter too");
--- no_error_log
[alert]



=== TEST 6: a durable zone: batches larger than reserve=, raced over two workers on an old and a new key: every ticket once, no gap
# README (Durability): a request waits for the disk when its counter's
# block is used up, "a new key waits for its first block"; within one
# nginx tickets are strictly ordered, gaps only after a crash. Here every
# batch but the smallest needs more than reserve=10 at once.
--- http_config
    ticket_zone p6:1m state=$TEST_NGINX_STATE_DIR/p6.state reserve=10;
--- config
    location = /b { ticket_counter zone=p6 key=$arg_k batch=100; }
--- pipelined_requests eval
["GET /b?k=a&count=35", "GET /b?k=a&count=100", "GET /b?k=a", "GET /b?k=a&count=1"]
--- response_body eval
["1 35\n", "36 135\n", "136\n", "137 137\n"]
--- timeout: 120
--- after
my @answers = race(4, 3, 10, sub {
    my ($c, $i) = @_;
    return '/b?k=' . ($i % 2 ? 'a' : 'b') . '&count=' . (1 + ($c * 13 + $i * 7) % 40);
});
is(scalar(grep { $_->[1] =~ /^(missing|error)$/ } @answers), 0, "$Name - every request answered")
    or diag(join "\n", map { "@$_" } grep { $_->[1] =~ /^(missing|error)$/ } @answers[0 .. 9]);
is(scalar(grep { $_->[1] ne '200' } @answers), 0, "$Name - every answer a 200")
    or diag(join "\n", map { "@$_" } grep { $_->[1] ne '200' } @answers[0 .. 9]);
for my $k (qw(a b)) {
    my @pairs = batches_of("key $k", grep { $_->[0] =~ /k=$k&/ } @answers);
    my $last = Math::BigInt->new($k eq 'a' ? 137 : 0);
    $last += $_->[1] - $_->[0] + 1 for @pairs;
    check_range("key $k", $k eq 'a' ? 138 : 1, "$last", @pairs);
    $Last{"p6 $k"} = "$last";
}
--- no_error_log
[alert]
[error]



=== TEST 7: a Redis zone named with ";" (its metadata separator) stops nginx, naming the rule
# README: "A Redis zone's name may only hold letters, digits, _, . and -";
# a zone "p7;x" would share its keys with zone p7's key x. Stops nginx
# cleanly (QUIT) before the next block starts it afresh.
--- http_config
    ticket_zone "p7;x:1m" redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { return 204; }
--- request
GET /t
--- must_die
--- error_log
invalid zone name "p7;x" for "redis=" in "ticket_zone" directive, only letters, digits, "_", "." and "-"



=== TEST 8: after a clean stop and a start, the durable batches go on exactly where they stopped, never below
# README: "After a clean stop (quit or stop) an nginx gives back what it
# reserved and did not hand out ...: the next start goes on with no gap";
# "a ticket is never issued twice, whatever the operator does".
--- http_config
    ticket_zone p6:1m state=$TEST_NGINX_STATE_DIR/p6.state reserve=10;
--- config
    location = /b { ticket_counter zone=p6 key=$arg_k batch=100; }
--- request
GET /b?k=fresh
--- response_body
1
--- error_log eval
qr/ticket zone "p6": \d+ counters restored from "\S+\/p6\.state"/
--- after
for my $k (qw(a b)) {
    my $last = $Last{"p6 $k"};
    ok(defined $last, "$Name - TEST 6 recorded key $k") or next;
    my ($first, $end) = ($last + 1, $last + 50);
    is(ask(GET => "/b?k=$k&count=50"), "200 $first $end\n", "$Name - key $k goes on at " . ($last + 1));
    is(ask(GET => "/b?k=$k"), "200 " . ($last + 51) . "\n", "$Name - and one at a time after it");
}
--- no_error_log
[alert]



=== TEST 9: HEAD takes no ticket: not with count=, not of a new key of a durable zone, not from Redis
# README: "HEAD answers the headers and takes none". A supply of 3 (max=3)
# shows any ticket a HEAD took; so do the first GETs of the durable and the
# Redis key, and Redis's own count.
--- http_config
    ticket_zone p9:1m;
    ticket_zone p9d:1m state=$TEST_NGINX_STATE_DIR/p9d.state reserve=10;
    ticket_zone p9r:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /k { ticket_counter zone=p9 key=$arg_k batch=10 max=3; }
    location = /d { ticket_counter zone=p9d key=$arg_k; }
    location = /r { ticket_counter zone=p9r key=$arg_k batch=10; }
--- request
GET /k?k=other
--- response_body
1
--- after
for my $uri ('/k?k=a', '/k?k=a&count=3', '/k?k=a&count=2', '/d?k=a', '/r?k=a', '/r?k=a&count=5') {
    like(ask(HEAD => $uri), qr/^200 \z/, "$Name - HEAD $uri: 200, no body") for 1 .. 2;
}
is(RedisServer::cli($ENV{TEST_NGINX_REDIS_PORT}, undef, qw(GET ticket:p9r:a)), '', "$Name - Redis counted nothing for a");
is(ask(GET => '/k?k=a&count=3'), "200 1 3\n", "$Name - the whole supply of 3 is still there");
is(ask(GET => '/d?k=a'), "200 1\n", "$Name - the durable key starts at 1");
is(ask(GET => '/r?k=a'), "200 1\n", "$Name - the Redis key starts at 1");
is(RedisServer::cli($ENV{TEST_NGINX_REDIS_PORT}, undef, qw(GET ticket:p9r:a)), '1', "$Name - Redis counted one");
--- no_error_log
[alert]
[error]



=== TEST 10: max=18446744073709551615 (2^64-1) is shown as it is, and the admin API says "sold out" only once no ticket is left
# README (ticket_admin GET): a counter "with no ticket left, whose requests
# get 410 sold out ..., adds "sold_out":true"; ticket_status shows each
# counter's max. A counter keeps its max plus one, which the top of u64
# does not fit: it read one less (a max nobody configured, and sold_out
# with 2^64-1 still to hand out) until the counter flagged it.
--- http_config
    ticket_zone p10:1m;
--- config
    location = /m { ticket_counter zone=p10 key=$arg_k start=18446744073709551610 max=18446744073709551615 batch=10; }
    location = /admin { ticket_admin zone=p10; }
    location = /s { ticket_status zone=p10; }
    location = /p { ticket_status zone=p10 format=prometheus; }
--- pipelined_requests eval
["GET /m?k=a&count=5", "GET /admin?key=a", "GET /s", "GET /p", "GET /m?k=a", "GET /m?k=a", "GET /admin?key=a"]
--- error_code eval
[200, 200, 200, 200, 200, 410, 200]
--- response_body_like eval
[qr/^18446744073709551610 18446744073709551614\n\z/,
 qr/^\{"key":"a","start":18446744073709551610,"issued":5,"last":18446744073709551614,"next":18446744073709551615,"max":18446744073709551615,"used":\d+\}\n\z/,
 qr/"key":"a","last":18446744073709551614,"max":18446744073709551615,/,
 qr/^ticket_max\{[^}]*key="a"[^}]*\} 18446744073709551615$/m,
 qr/^18446744073709551615\n\z/, qr/^sold out\n\z/,
 qr/^\{"key":"a","start":18446744073709551610,"issued":6,"last":18446744073709551615,"next":null,"max":18446744073709551615,"used":\d+,"sold_out":true\}\n\z/]
--- no_error_log
[alert]



=== TEST 11: a misspelled redis= (or a URL without it) never shows its password in the error
# README: "Passwords never appear in the error log": nginx -t quoted the
# whole unknown parameter, URL and password with it.
--- http_config
    ticket_zone p11:1m Redis=redis://alice:hunter2@127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { return 204; }
--- request
GET /t
--- must_die
--- error_log
invalid parameter "Redis=redis://alice:***@127.0.0.1:
--- no_error_log
hunter2



=== TEST 12: while a reload shrinks a zone, no key is made past what the new zone fits; a failed one limits until the next reload
# README (ticket_zone): "when a reload changes the size, the counters are
# carried over into the new zone". Keys the outgoing workers made between
# the new zone's size check and the carry-over could miss a room there and
# start again from start= once room freed: the old zone now makes no key
# past what the new one fits. Seen here through a shrinking reload that
# fails after the zones were laid out (its new listen port is taken): the
# old workers keep serving, no more keys than the 32k zone fits, until a
# reload that keeps the size lifts the limit.
--- http_config
    ticket_zone p12:64k; # shrink here
--- config
    location = /k { ticket_counter zone=p12 key=$arg_k; }
--- pipelined_requests eval
[map { "GET /k?k=key$_" } 1 .. 100]
--- response_body eval
[("1\n") x 100]
--- timeout: 120
--- after
my $busy = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
    or die "a port to hold: $!";
my $port = $busy->sockport;
my $logged = reload_with('ticket_zone p12:64k; # shrink here',
                         "ticket_zone p12:32k; server { listen 127.0.0.1:$port; }",
                         qr/holds no more than (\d+) keys until the reload is done[^\n]*\n(?s:.*)bind\(\) to 127\.0\.0\.1:$port failed/);
ok($logged, "$Name - the shrinking reload failed after laying out the zones");
my ($fits) = defined $logged ? $logged =~ /(\d+)/ : ();
$fits //= 0;
ok($fits > 100 && $fits < 200, "$Name - the 32k zone fits $fits keys");
sleep 1 * $Slow;    # a failed reload leaves the old workers serving
my @made = grep { $_->[1] ne "200 1\n" } map { [$_, ask(GET => "/k?k=new$_")] } 101 .. $fits;
is(scalar(@made), 0, "$Name - keys up to $fits are made")
    or diag(join '; ', map { "new$_->[0]: $_->[1]" } @made[0 .. ($#made < 4 ? $#made : 4)]);
is(ask(GET => '/k?k=one-too-many'), "503 ticket zone full\n", "$Name - no key past $fits");
is(ask(GET => '/k?k=key7'), "200 2\n", "$Name - the keys made go on");
close $busy;
my $lifted = reload_with("ticket_zone p12:32k; server { listen 127.0.0.1:$port; }",
                         'ticket_zone p12:64k; # shrink here', qr/reconfiguring|signal process started/);
my $deadline = time + 30 * $Slow;
my $got = '';
while (time < $deadline) {
    $got = ask(GET => '/k?k=one-too-many');
    last if $got eq "200 1\n";
    sleep 0.2;
}
is($got, "200 1\n", "$Name - a reload that keeps the size lifts the limit");
--- no_error_log
[alert]



=== TEST 13: redis= pointed at something that is not Redis (here an HTTP server): 503, said, and the worker goes on
# README (When Redis fails): "Unreachable or too slow: 503 ticket authority
# unavailable ..., one log line when it goes away ...; other locations of
# the worker keep answering. Never a locally made ticket." An operator's
# wrong port may be a web server: it answers the handshake with an HTTP
# error, which must be a protocol error, never a ticket or a crash.
--- http_config
    ticket_zone p13:1m redis=redis://127.0.0.1:$TEST_NGINX_SERVER_PORT redis_timeout=2s;
    ticket_zone p13l:1m;
--- config
    location = /t { ticket_counter zone=p13; }
    location = /l { ticket_counter zone=p13l; }
--- pipelined_requests eval
["GET /t", "GET /l", "GET /t", "GET /l"]
--- error_code eval
[503, 200, 503, 200]
--- response_body eval
["ticket authority unavailable\n", "1\n", "ticket authority unavailable\n", "2\n"]
--- wait: 0.5
--- error_log eval
qr/ticket: redis redis:\/\/127\.0\.0\.1:\d+\/0 is unavailable: not a Redis reply \(unknown RESP type byte 0x48\)/
--- no_error_log
[alert]
[crit]
