# Hostile clients: every input the README documents, bent (empty, huge,
# negative, overflowing, leading zeros, escaped NUL, newline and quote
# bytes, non-UTF-8 keys), what the status pages then render, and clients
# that leave while their request waits (for a durable reservation or for
# Redis): closed sockets, RSTs, pipelines cut mid-way, bodies on GET,
# HTTP/1.0 and chunked bodies. After each, no worker may have died, nothing
# may show under valgrind, and the numbers handed out afterwards go on
# without a duplicate.
#
# A block's --- attack section is Perl run after its last response
# (t/lib/AfterBlock.pm), with the helpers below (raw sockets, loopback
# only, every wait bounded).
use lib 't/lib';
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP ();
use Socket qw(SOL_SOCKET);
use Test::More;
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(sleep time);
use AfterBlock;
use Parked;
use PromCheck;
use RedisServer;

$ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-hostile-XXXXXX', TMPDIR => 1, CLEANUP => 1);
$ENV{TEST_NGINX_REDIS_PORT} = 16490;
$ENV{TEST_NGINX_REDIS_MUTE_PORT} = 16492;
my $redis_pid = RedisServer::start(port => $ENV{TEST_NGINX_REDIS_PORT});
RedisServer::mute(port => $ENV{TEST_NGINX_REDIS_MUTE_PORT});

# valgrind makes everything slower
my $Slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 6 : 1;
my $Name = '';

# Sends raw bytes on a connection of its own; returns the socket.
sub open_with {
    my ($bytes) = @_;
    my $sock = Parked::connect_server();
    binmode $sock;
    syswrite($sock, $bytes) if defined $bytes && length $bytes;
    return $sock;
}

# Everything the server sends until it closes (or $seconds pass).
sub read_all { Parked::read_all(@_) }

# Splits a stream of responses into "STATUS BODY" strings: bodies by
# Content-Length, chunked, or to the end when the server closes; none
# otherwise (HEAD). 1xx responses are skipped.
sub split_responses {
    my ($raw) = @_;
    my @out;
    while ($raw =~ s{\AHTTP/1\.\d (\d{3})[^\r]*\r\n((?:[^\r]+\r\n)*)\r\n}{}) {
        my ($status, $head) = ($1, $2);
        next if $status =~ /^1/;
        my $body = '';
        if ($head =~ /^Transfer-Encoding:\s*chunked/mi) {
            while ($raw =~ s{\A([0-9a-fA-F]+)\r\n}{}) {
                my $size = hex $1;
                $body .= substr($raw, 0, $size, '');
                $raw =~ s{\A\r\n}{};
                last if $size == 0;
            }
            $raw =~ s{\A\r\n}{};
        } elsif ($head =~ /^Content-Length:\s*(\d+)/mi) {
            $body = substr($raw, 0, $1, '');
        } elsif ($head =~ /^Connection:\s*close/mi) {
            ($body, $raw) = ($raw, '');
        }
        push @out, "$status $body";
    }
    push @out, "junk: $raw" if length $raw;
    return @out;
}

# One request, alone on its connection: "STATUS BODY".
sub ask {
    my ($method, $uri, $extra) = @_;
    my $sock = open_with("$method $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                         . ($extra // '') . "\r\n");
    my @got = split_responses(read_all($sock, 10 * $Slow));
    close $sock;
    return $got[0] // '';
}

sub worker_alive {
    Parked::worker_survived($Name);
}

# --- json_keys: the keys (a Perl list) the block's last response, a JSON
# status page, must hold, in any order, besides the default counter's null.
# Checked before the block's --- attack runs.
Test::Nginx::Socket::add_response_body_check(sub {
    my ($block, $body) = @_;
    return unless AfterBlock::last_response(@_);
    my $want = $block->json_keys;
    return unless defined $want;
    my $name = $block->name;
    my $page = eval { JSON::PP->new->utf8->decode($body) };
    ok($page, "$name - the status page is valid JSON (UTF-8)") or diag "$@: $body";
    my @keys = sort map { $_->{key} // '(default)' }
               map { @{ $_->{counters} } } values %{ $page->{zones} // {} };
    my @expected = sort('(default)', eval $want);
    die "$name: --- json_keys: $@" if $@;
    is_deeply(\@keys, \@expected, "$name - every key, one to one");
});

# --- attack, evaled here so that it sees this file's variables
AfterBlock::install(attack => \$Name, sub { eval $_[0] });

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: count= bent every way: only plain decimals within batch=
--- http_config
    ticket_zone h1:32k;
--- config
    location = /b { ticket_counter zone=h1 batch=100; }
--- pipelined_requests eval
["GET /b?count=", "GET /b?count=0", "GET /b?count=-1", "GET /b?count=+1", "GET /b?count=%2B1",
 "GET /b?count=%201", "GET /b?count=1%00", "GET /b?count=%31", "GET /b?count=1.0", "GET /b?count=0x10",
 "GET /b?count=18446744073709551616", "GET /b?count=18446744073709551617",
 "GET /b?count=9223372036854775808", "GET /b?count=00000000000000000000001",
 "GET /b?count=" . ("9" x 3000), "GET /b?count=101",
 "GET /b?count=01", "GET /b?count=100", "GET /b?count=2&count=50", "GET /b"]
--- error_code eval
[(400) x 16, 200, 200, 200, 200]
--- response_body eval
[("bad count\n") x 16, "1 1\n", "2 101\n", "102 103\n", "104\n"]
--- no_error_log
[alert]
exited on signal



=== TEST 2: keys from $arg_: empty, missing, 64 and 65 bytes, escapes, raw non-UTF-8 bytes; the JSON page shows each one to one
--- http_config
    ticket_zone h2:1m;
--- config
    location = /k { ticket_counter zone=h2 key=$arg_k; }
    location = /s { ticket_status zone=h2; }
--- pipelined_requests eval
["GET /k?k=", "GET /k", "GET /k?x=1", "GET /k?k=" . ("a" x 65), "GET /k?k=" . ("a" x 64),
 "GET /k?k=%22", "GET /k?k=%5C", "GET /k?k=a%0Ab", "GET /k?k=a%00", "GET /k?k=%FF",
 "GET /k?k=\xff\xfe", "GET /k?k=q\"uo\\te", "GET /k?k=\xc3\xa9t\xc3\xa9", "GET /k?k=\xc3",
 "GET /k?k=%22", "GET /k?k=+1", "GET /k?k=%20", "GET /s"]
--- error_code eval
[400, 400, 400, 400, (200) x 14]
--- response_body_like eval
["^empty key\n", "^empty key\n", "^empty key\n", "^key too long\n", ("^1\n\\z") x 10,
 "^2\n\\z", "^1\n\\z", "^1\n\\z", "^\\{"]
--- json_keys
("a" x 64, '%22', '%5C', 'a%0Ab', 'a%00', '%FF', '\xff\xfe', 'q"uo\\\\te', "\x{e9}t\x{e9}", '\xc3', '+1', '%20')
--- no_error_log
[alert]
exited on signal



=== TEST 3: keys with control bytes, quotes, backslashes and non-UTF-8 ($uri, a header): both pages stay parseable
--- http_config
    ticket_zone h3:1m;
--- config
    location /u/ { ticket_counter zone=h3 key=$uri; }
    location = /h { ticket_counter zone=h3 key=$http_x_k; }
    location = /s { ticket_status zone=h3; }
    location = /metrics { ticket_status zone=h3 format=prometheus; }
--- pipelined_requests eval
["GET /u/a%0Ab", "GET /u/%0D", "GET /u/%0D%0Aticket_issued_total%7Bzone=%22h3%22%7D%20999", "GET /u/%22q%22",
 "GET /u/%5C", "GET /u/%5Cx0d", "GET /u/%FF%FE", "GET /u/%01%7F", "GET /u/a%09b", "GET /h",
 "GET /u/plain", "GET /u/plain", "GET /metrics"]
--- more_headers eval
"X-K: h\x01\t\x7f\xff\"\\"
--- error_code eval
[(200) x 13]
--- response_body_like eval
[("^1\n\\z") x 9, "^1\n\\z", "^1\n\\z", "^2\n\\z", "ticket_issued_total"]
--- prometheus_samples
ticket_issued_total zone=h3 key=/u/plain 2
ticket_issued_total zone=h3 key=/u/\x0d 1
ticket_issued_total zone=h3 key=/u/\\x0d 1
ticket_zone_keys zone=h3 11
--- attack
like(ask(GET => '/u/%00'), qr/^400 /, "$Name - nginx refuses a NUL in the path itself");
my ($mstatus, $page) = ask(GET => '/metrics') =~ /^(\d+) (.*)\z/s;
is($mstatus, 200, "$Name - the Prometheus page");
unlike($page, qr/[\x00-\x09\x0b-\x1f\x7f]/, "$Name - no control byte on the Prometheus page");
unlike($page, qr/^ticket_issued_total\{zone="h3"\} 999/m, "$Name - a key cannot forge a line");
my ($status, $json) = ask(GET => '/s') =~ /^(\d+) (.*)\z/s;
my $decoded = eval { JSON::PP->new->utf8->decode($json) };
ok($decoded, "$Name - the JSON page is valid") or diag $json;
unlike($json, qr/[\x00-\x1f\x7f](?!\z)/, "$Name - no control byte on the JSON page (but its last newline)");
--- no_error_log
[alert]
exited on signal



=== TEST 4: ticket_admin's parameters bent every way
--- http_config
    ticket_zone h4:1m;
--- config
    location = /k { ticket_counter zone=h4 key=$arg_k; }
    location = /admin { ticket_admin zone=h4; }
--- pipelined_requests eval
["POST /admin?key=a&next=", "POST /admin?key=a&next=-1", "POST /admin?key=a&next=+5",
 "POST /admin?key=a&next=%35", "POST /admin?key=a&next=5%00", "POST /admin?key=a&next=18446744073709551616",
 "POST /admin?key=a&next=" . ("1" x 21), "POST /admin?key=a&next=5&start=18446744073709551615",
 "POST /admin?key=a&next=5&start=-1", "POST /admin?key=&next=5", "POST /admin?key=" . ("k" x 65) . "&next=5",
 "POST /admin?key=a", "POST /admin?key=a\nnext=5", "DELETE /admin", "DELETE /admin?key=a&next=5",
 "GET /admin?key=a&next=5", "GET /admin?key=nope",
 "POST /admin?key=a&next=72057594037927937", "POST /admin?key=a&next=18446744073709551615",
 "POST /admin?key=a&next=0005", "GET /k?k=a", "POST /admin?key=a&next=3", "GET /admin?key=\xff\"q\\",
 "POST /admin?key=\xff\"q\\&next=7", "GET /admin?key=\xff\"q\\", "DELETE /admin?key=\xff\"q\\",
 "PUT /admin?key=a&next=9"]
--- error_code eval
[(400) x 16, 404, 400, 400, 200, 200, 409, 404, 200, 200, 200, 405]
--- response_body_like eval
['"bad next"', '"bad next"', '"bad next"', '"bad next"', '"bad next"', '"bad next"', '"bad next"',
 '"bad start"', '"bad start"', '"empty key"', '"key too long"', '"POST needs next=N"', '"POST needs next=N"',
 '"the default counter cannot be deleted"', 'only go with POST', 'only go with POST', 'no such counter',
 '"next is past the end of the number range"', '"next is past the end of the number range"',
 '"issued":4,"last":4,"next":5', '^5\n', 'would reissue', 'no such counter',
 qr/^\{"key":"\\\\xff\\"q\\\\\\\\","start":1,"issued":6,"last":6,"next":7,/, '"issued":6',
 '"retired":true', 'method not allowed']
--- no_error_log
[alert]
exited on signal



=== TEST 5: a durable zone: a move past the end of the number range is refused before it reaches the file
--- http_config
    ticket_zone h5:1m state=$TEST_NGINX_STATE_DIR/h5.state reserve=10;
--- config
    location = /k { ticket_counter zone=h5 key=$arg_k; }
    location = /admin { ticket_admin zone=h5; }
--- pipelined_requests eval
["GET /k?k=a", "POST /admin?key=a&next=72057594037927937", "POST /admin?key=b&next=18446744073709551615",
 "POST /admin?key=a&next=72057594037927936", "GET /k?k=a", "GET /k?k=c", "GET /k?k=a"]
--- error_code eval
[200, 400, 400, 200, 410, 200, 410]
--- response_body_like eval
['^1\n', 'past the end of the number range', 'past the end of the number range', '"next":72057594037927936',
 '^sold out\n', '^1\n', '^sold out\n']
--- attack
my $state = "$ENV{TEST_NGINX_STATE_DIR}/h5.state";
ok(-s $state, "$Name - the state file is there");
--- no_error_log
could not be written
[alert]
exited on signal



=== TEST 6: raw requests: bodies on GET, chunked POST, HTTP/1.0, HTTP/0.9, odd methods, Expect; tickets go on in order
--- http_config
    ticket_zone h6:32k;
--- config
    location = /t { ticket_counter zone=h6; }
--- request
GET /t
--- response_body
1
--- attack
my $crlf = "\r\n";
my $sock = open_with(
    "GET /t HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
  . "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
  . "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n1\r\nz\r\n0\r\nX: y\r\n\r\n"
  . "PUT /t HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
  . "FOO /t HTTP/1.1\r\nHost: a\r\n\r\n"
  . "HEAD /t HTTP/1.1\r\nHost: a\r\n\r\n"
  . "GET /t HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"
  . "GET /t HTTP/1.0\r\n\r\n");
my @got = split_responses(read_all($sock, 10 * $Slow));
close $sock;
# HEAD's answer has no body (its headers announce none)
is_deeply(\@got, ["200 2\n", "200 3\n", "200 4\n", "405 method not allowed\n",
                  "405 method not allowed\n", "200 ", "200 5\n", "200 6\n"],
          "$Name - every pipelined request answered in order") or diag explain \@got;
# a GET whose announced body never comes: answered, then the connection ends
$sock = open_with("GET /t HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc");
my ($first) = split_responses(read_all($sock, 2 * $Slow));
Parked::reset_close($sock);
is($first, "200 7\n", "$Name - a body that never comes does not hold the ticket");
# a bad chunk: 400, no ticket
$sock = open_with("POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
my @bad = split_responses(read_all($sock, 3 * $Slow));
close $sock;
like($bad[0] // '', qr/^(400|200 8\n)/, "$Name - a bad chunk first: $bad[0]");
my $taken = ($bad[0] // '') =~ /^200/ ? 1 : 0;
# HTTP/0.9
$sock = open_with("GET /t\r\n");
my $nine = read_all($sock, 3 * $Slow);
close $sock;
like($nine, qr/^(\d+\n|HTTP\/1\.1 400)/, "$Name - HTTP/0.9: " . substr($nine, 0, 20));
$taken++ if $nine =~ /^\d+\n/;
is(ask(GET => '/t'), "200 " . (8 + $taken) . "\n", "$Name - the counter went on without a gap or a duplicate");
worker_alive();
--- no_error_log
[alert]
exited on signal



=== TEST 7: a durable zone: clients that leave while their requests wait for the disk (FIN, RST, cut pipelines, half bodies)
--- http_config
    ticket_zone h7:1m state=$TEST_NGINX_STATE_DIR/h7.state reserve=10;
--- config
    location = /k { ticket_counter zone=h7 key=$arg_k batch=100; }
--- pipelined_requests eval
["GET /k?k=a", "GET /k?k=b"]
--- response_body eval
["1\n", "1\n"]
--- attack
my $dir = $ENV{TEST_NGINX_STATE_DIR};
# held until released below, within the requests' 5 s deadline
my $lock = Parked::hold_lock($dir, 30);
# a's block (1-10) used up while the disk is held: a's next request waits
is(ask(GET => '/k?k=a&count=9'), "200 2 10\n", "$Name - a's block used up");
is(ask(GET => '/k?k=b&count=9'), "200 2 10\n", "$Name - b's block used up");
my @socks;
my $get = sub { "GET /k?k=$_[0] HTTP/1.1\r\nHost: x\r\n" . ($_[1] // "") . "\r\n" };
push @socks, [fin => open_with($get->('a'))];
push @socks, [rst => open_with($get->('a'))];
push @socks, [pipe => open_with(join '', map { $get->('a') } 1 .. 20)];
push @socks, [pipe_rst => open_with(join '', map { $get->('b') } 1 .. 20)];
push @socks, [new_key => open_with($get->('fresh'))];
push @socks, [half_body => open_with("POST /k?k=a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")];
push @socks, [half_body_rst => open_with("POST /k?k=b HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")];
push @socks, [half_chunk => open_with("POST /k?k=a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")];
push @socks, [body_on_get => open_with("GET /k?k=b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbo")];
push @socks, [http10 => open_with("GET /k?k=a HTTP/1.0\r\n\r\n")];
# one client stays: it gets its ticket once the disk answers
my $stays = open_with($get->('a', "Connection: close\r\n"));
sleep 0.4 * $Slow;
for my $s (@socks) {
    my ($how, $sock) = @$s;
    if ($how =~ /rst/) { Parked::reset_close($sock) } else { close $sock }
}
kill 'KILL', $lock;
Parked::wait_child($lock, 5);
my ($stayed) = split_responses(read_all($stays, 6 * $Slow));
close $stays;
like($stayed // '', qr/^200 1[1-9]\n\z|^200 2\d\n\z/, "$Name - the client that stayed got a ticket past a's block");
my ($n) = ($stayed // '') =~ /^200 (\d+)/;
my $next_a = ask(GET => '/k?k=a');
my $next_b = ask(GET => '/k?k=b');
my ($a2) = $next_a =~ /^200 (\d+)\n\z/;
ok(defined $a2 && defined $n && $a2 > $n, "$Name - a goes on past every ticket handed out ($next_a)");
like($next_b, qr/^200 (1[1-9]|[2-9]\d)\n\z/, "$Name - b goes on past its block ($next_b)");
is(ask(GET => '/k?k=fresh2'), "200 1\n", "$Name - a new key afterwards");
worker_alive();
--- no_error_log
[alert]
exited on signal
--- timeout: 60



=== TEST 8: Redis stopped (kill -STOP) while requests wait for it; clients leave every way; CONT: numbers go on, none twice
--- http_config
    ticket_zone h8:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=20s;
    ticket_zone h8l:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=20s lease=5;
--- config
    location = /t { ticket_counter zone=h8; }
    location = /k { ticket_counter zone=h8 key=$arg_k batch=10; }
    location = /pub { ticket_counter zone=h8 key=$arg_k create=off; }
    location = /admin { ticket_admin zone=h8; }
    location = /l { ticket_counter zone=h8l key=$arg_k; }
--- pipelined_requests eval
["GET /t", "GET /k?k=a", "GET /l?k=warm"]
--- response_body_like eval
["^1\n", "^1\n", "^\\d+\n"]
--- attack
RedisServer::cli($ENV{TEST_NGINX_REDIS_PORT}, undef, 'SET', 'ticket:h8:made', '5');
kill 'STOP', $redis_pid;
my $get = sub { "$_[0] $_[1] HTTP/1.1\r\nHost: x\r\n" . ($_[2] // "") . "\r\n" };
my @socks;
for my $i (1 .. 2) {
    push @socks, [fin => open_with($get->(GET => '/t'))];
    push @socks, [rst => open_with($get->(GET => '/k?k=a&count=3'))];
    push @socks, [pipe => open_with(join '', map { $get->(GET => '/t') } 1 .. 10)];
    push @socks, [pipe_rst => open_with(join '', map { $get->(GET => '/k?k=a') } 1 .. 10)];
    push @socks, [admin => open_with($get->(GET => '/admin?key=a'))];
    push @socks, [admin_rst => open_with($get->(POST => '/admin?key=zz&next=50', "Content-Length: 0\r\n"))];
    push @socks, [exists => open_with($get->(GET => '/pub?k=made'))];
    push @socks, [lease_rst => open_with($get->(GET => "/l?k=new$i"))];
    push @socks, [half_body => open_with("POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")];
    push @socks, [http10 => open_with("GET /k?k=a HTTP/1.0\r\n\r\n")];
}
my $stays = open_with($get->(GET => '/t', "Connection: close\r\n"));
sleep 0.5 * $Slow;
for my $s (@socks) {
    my ($how, $sock) = @$s;
    if ($how =~ /rst/) { Parked::reset_close($sock) } else { close $sock }
}
sleep 0.3 * $Slow;
kill 'CONT', $redis_pid;
my ($stayed) = split_responses(read_all($stays, 8 * $Slow));
close $stays;
like($stayed // '', qr/^200 \d+\n\z/, "$Name - the client that stayed got its ticket ($stayed)");
my ($n) = ($stayed // '') =~ /^200 (\d+)/;
my $redis_t = RedisServer::cli($ENV{TEST_NGINX_REDIS_PORT}, undef, 'GET', 'ticket:h8');
my ($next) = ask(GET => '/t') =~ /^200 (\d+)\n\z/;
ok(defined $next && defined $n && $next > $n && $next == $redis_t + 1,
   "$Name - the default counter goes on past Redis's count ($n, then $next; redis had $redis_t)");
my $redis_a = RedisServer::cli($ENV{TEST_NGINX_REDIS_PORT}, undef, 'GET', 'ticket:h8:a');
is(ask(GET => '/k?k=a'), "200 " . ($redis_a + 1) . "\n", "$Name - a goes on past Redis's count");
like(ask(GET => '/admin?key=a'), qr/^200 \{"key":"a"/, "$Name - admin answers");
is(ask(GET => '/pub?k=made'), "200 6\n", "$Name - create=off serves a key Redis has");
like(ask(GET => '/l?k=new1'), qr/^200 \d+\n\z/, "$Name - the lease zone answers");
worker_alive();
--- no_error_log
[alert]
exited on signal
--- timeout: 90



=== TEST 9: a Redis that never answers: requests wait, clients leave every way, then 503 within redis_timeout
--- http_config
    ticket_zone h9:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_MUTE_PORT redis_timeout=1s;
--- config
    location = /t { ticket_counter zone=h9; }
    location = /k { ticket_counter zone=h9 key=$arg_k create=off; }
    location = /admin { ticket_admin zone=h9; }
--- request
GET /t
--- error_code: 503
--- response_body
ticket authority unavailable
--- attack
my $get = sub { "$_[0] $_[1] HTTP/1.1\r\nHost: x\r\n" . ($_[2] // "") . "\r\n" };
my @socks;
push @socks, [fin => open_with($get->(GET => '/t'))];
push @socks, [rst => open_with($get->(GET => '/t'))];
push @socks, [pipe_rst => open_with(join '', map { $get->(GET => '/t') } 1 .. 10)];
push @socks, [admin_rst => open_with($get->(GET => '/admin?key=a'))];
push @socks, [exists => open_with($get->(GET => '/k?k=a'))];
push @socks, [half_body_rst => open_with("POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")];
sleep 0.3 * $Slow;
for my $s (@socks) {
    my ($how, $sock) = @$s;
    if ($how =~ /rst/) { Parked::reset_close($sock) } else { close $sock }
}
my $t0 = time;
is(ask(GET => '/t'), "503 ticket authority unavailable\n", "$Name - 503 afterwards");
cmp_ok(time - $t0, '<', 4 * $Slow, "$Name - within redis_timeout's bounds");
worker_alive();
--- no_error_log
[alert]
exited on signal
--- timeout: 60



=== TEST 10: a status page of several slices: clients that leave mid-page, RST, or read slowly
--- http_config
    ticket_zone h10:2m;
--- config
    location = /k { ticket_counter zone=h10 key=$arg_k; }
    location = /s { ticket_status zone=h10; }
    location = /metrics { ticket_status zone=h10 format=prometheus; }
--- request
GET /k?k=first
--- response_body
1
--- attack
# 2,400 keys: three slices of 1,000 counters
for my $part (0 .. 5) {
    my $sock = open_with(join('', map { "GET /k?k=key$_ HTTP/1.1\r\nHost: x\r\n\r\n" } ($part * 400 + 1) .. ($part * 400 + 400))
                         . "GET /k?k=last$part HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my @got = split_responses(read_all($sock, 20 * $Slow));
    close $sock;
    is(scalar(grep { $_ eq "200 1\n" } @got), 401, "$Name - keys made ($part)") or last;
}
for my $i (1 .. 3) {
    for my $uri ('/s', '/metrics') {
        my $sock = open_with("GET $uri HTTP/1.1\r\nHost: x\r\n\r\n");
        sysread($sock, my $head, 100) if $i > 1;
        if ($i == 2) { Parked::reset_close($sock) } else { close $sock }
    }
}
# a client that reads nothing with a tiny window, then leaves
my $slow = Parked::connect_server();
setsockopt($slow, SOL_SOCKET, Socket::SO_RCVBUF, pack('i', 1024));
syswrite($slow, "GET /s HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
sleep 0.5 * $Slow;
Parked::reset_close($slow);
my $page = ask(GET => '/s');
my ($json) = $page =~ /^200 (.*)\z/s;
my $decoded = eval { JSON::PP->new->utf8->decode($json // '') };
is(scalar(@{ $decoded->{zones}{h10}{counters} // [] }), 2408, "$Name - a whole page afterwards");
is(ask(GET => '/k?k=first'), "200 2\n", "$Name - the counter goes on");
worker_alive();
--- no_error_log
[alert]
exited on signal
--- timeout: 120
