# ticket_admin refusals: a POST that is refused (400, 409) makes nothing:
# no key in the zone, no write of a durable zone's state file. And a counter
# moved to the end of its number range says it is sold out, as one moved to
# max + 1 does. Every block uses zones of its own (HUP mode reloads between
# blocks and keeps same-named zones). On a Redis zone (a redis-server this
# file starts) the same holds: a refused move sends nothing, or the script
# refuses before it writes.
#
# A block's --- after section is Perl run after its last response
# (t/lib/AfterBlock.pm), with `ask(METHOD, URI)` ("STATUS BODY", a
# connection of its own), `facts(PATH)` (t/lib/StateFile.pm) and `$Slow`
# (valgrind).
use lib 't/lib';
use Fcntl qw(O_RDONLY O_DIRECTORY LOCK_EX LOCK_UN);
use File::Temp qw(tempdir);
use Test::More;
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(sleep);
use AfterBlock;
use RedisServer;
use StateFile qw(frame mark facts);
use Steps;

$ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-refusals-XXXXXX', TMPDIR => 1, CLEANUP => 1);
$ENV{TEST_NGINX_REDIS_PORT} = 16494;
RedisServer::start(port => $ENV{TEST_NGINX_REDIS_PORT});

# valgrind makes everything slower
our $Slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 6 : 1;
our $Name = '';

sub ask {
    my ($method, $uri) = @_;
    my ($status, $body) = Steps::request($method, $uri);
    return "$status $body";
}

# Appends records to a state file as another nginx sharing it would: under
# the directory's lock.
sub append_as_another_nginx {
    my ($path, @records) = @_;
    (my $dir = $path) =~ s{/[^/]+\z}{};
    sysopen(my $lock, $dir, O_RDONLY | O_DIRECTORY) or die "$dir: $!";
    flock($lock, LOCK_EX) or die "flock $dir: $!";
    open my $fh, '>>:raw', $path or die "$path: $!";
    print $fh frame(@records);
    close $fh or die "$path: $!";
    flock($lock, LOCK_UN);
    close $lock;
}

# evaled here so that it sees this file's variables
AfterBlock::install(after => \$Name, sub { eval $_[0] });

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a local zone: refused moves of new keys make no key
--- http_config
    ticket_zone r1:1m;
--- config
    location = /k { ticket_counter zone=r1 key=$arg_k; }
    location = /admin { ticket_admin zone=r1; }
    location = /s { ticket_status zone=r1; }
--- pipelined_requests eval
["POST /admin?key=n1&next=0", "POST /admin?key=n2&next=5&start=10",
 "POST /admin?key=n3&next=72057594037927937", "POST /admin?key=n4&next=18446744073709551615",
 "POST /admin?key=n5&next=72057594037927938&start=2",
 "GET /admin?key=n1", "GET /admin?key=n2", "GET /admin?key=n3", "GET /admin?key=n4", "GET /admin?key=n5",
 "GET /s", "GET /k?k=n2"]
--- error_code eval
[400, 400, 400, 400, 400, 404, 404, 404, 404, 404, 200, 200]
--- response_body_like eval
["next is below the counter's start", "next is below the counter's start",
 "next is past the end of the number range", "next is past the end of the number range",
 "next is past the end of the number range",
 ("no such counter") x 5, qr/"keys":0,/, qr/^1\n/]
--- no_error_log
[alert]
[error]



=== TEST 2: a local zone: refused moves of an existing key leave it as it was, and make no other
--- http_config
    ticket_zone r2:1m;
--- config
    location = /k { ticket_counter zone=r2 key=$arg_k start=10 max=20; }
    location = /admin { ticket_admin zone=r2; }
    location = /s { ticket_status zone=r2; }
--- pipelined_requests eval
["GET /k?k=a", "GET /k?k=a", "POST /admin?key=a&next=9", "POST /admin?key=a&next=22",
 "POST /admin?key=a&next=11", "POST /admin?key=a&next=72057594037927937", "GET /admin?key=a", "GET /s",
 "GET /k?k=a"]
--- error_code eval
[200, 200, 400, 400, 409, 400, 200, 200, 200]
--- response_body_like eval
[qr/^10\n/, qr/^11\n/, "next is below the counter's start", "next is above the counter's max",
 "would reissue", "next is above the counter's max",
 qr/^\{"key":"a","start":10,"issued":2,"last":11,"next":12,"max":20,"used":\d+\}\n\z/, qr/"keys":1,/,
 qr/^12\n/]



=== TEST 3: a durable zone: refused moves make no key and leave the state file as it was
--- http_config
    ticket_zone r3:1m state=$TEST_NGINX_STATE_DIR/r3.state reserve=100;
--- config
    location = /k { ticket_counter zone=r3 key=$arg_k; }
    location = /admin { ticket_admin zone=r3; }
    location = /s { ticket_status zone=r3; }
--- pipelined_requests eval
["GET /k?k=a", "GET /k?k=a", "GET /admin?key=a"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/^1\n/, qr/^2\n/, qr/"next":3/]
--- after
my $state = "$ENV{TEST_NGINX_STATE_DIR}/r3.state";
sleep 0.5 * $Slow;    # any write the takes asked for is done
my $before = facts($state);
like($before, qr/^[0-9a-f]{64} /, "$Name - the state file is there");
my @refused = (
    ['POST', '/admin?key=n1&next=0', qr/^400 .*next is below the counter's start/],
    ['POST', '/admin?key=n2&next=5&start=10', qr/^400 .*next is below the counter's start/],
    ['POST', '/admin?key=n3&next=72057594037927937', qr/^400 .*past the end of the number range/],
    ['POST', '/admin?key=n4&next=18446744073709551615', qr/^400 .*past the end of the number range/],
    ['POST', '/admin?key=a&next=2', qr/^409 .*would reissue/],
    ['POST', '/admin?key=a&next=72057594037927937', qr/^400 .*past the end of the number range/],
);
for my $r (@refused) {
    like(ask($r->[0], $r->[1]), $r->[2], "$Name - $r->[0] $r->[1] is refused");
}
like(ask('GET', "/admin?key=$_"), qr/^404 .*no such counter/, "$Name - no key $_") for qw(n1 n2 n3 n4);
like(ask('GET', '/s'), qr/"keys":1,/, "$Name - one key: a");
sleep 1.1 * $Slow;    # past the file's mtime granularity, and past any write
is(facts($state), $before, "$Name - the state file was not written");
like(ask('GET', '/k?k=a'), qr/^200 3\n/, "$Name - a goes on");
--- no_error_log
[alert]
[error]



=== TEST 4: a durable zone: a move of a new key refused because another nginx sharing the file holds its numbers makes no key
--- http_config
    ticket_zone r4:1m state=$TEST_NGINX_STATE_DIR/r4.state reserve=10;
--- config
    location = /k { ticket_counter zone=r4 key=$arg_k; }
    location = /admin { ticket_admin zone=r4; }
    location = /s { ticket_status zone=r4; }
--- pipelined_requests eval
["GET /k?k=a", "GET /s"]
--- error_code eval
[200, 200]
--- response_body_like eval
[qr/^1\n/, qr/"keys":1,/]
--- after
my $state = "$ENV{TEST_NGINX_STATE_DIR}/r4.state";
sleep 0.5 * $Slow;
append_as_another_nginx($state, mark('x', 100, instance => 0x5eed));
like(ask('POST', '/admin?key=x&next=5'), qr/^409 .*would reissue/, "$Name - below the other nginx's mark");
like(ask('GET', '/admin?key=x'), qr/^404 .*no such counter/, "$Name - no key x");
like(ask('GET', '/s'), qr/"keys":1,/, "$Name - still one key");
like(ask('POST', '/admin?key=x&next=101'), qr/^200 .*"next":101/, "$Name - past it, x is made");
like(ask('GET', '/k?k=x'), qr/^200 101\n/, "$Name - and goes on from there");
--- no_error_log
[alert]
[error]



=== TEST 5: moved to the end of the number range (or to max + 1), a counter says it is sold out
--- http_config
    ticket_zone r5:1m;
--- config
    location = /k { ticket_counter zone=r5 key=$arg_k; }
    location = /m { ticket_counter zone=r5 key=$arg_k start=10 max=20; }
    location = /admin { ticket_admin zone=r5; }
--- pipelined_requests eval
["GET /k?k=a", "POST /admin?key=a&next=72057594037927936", "GET /k?k=a", "GET /admin?key=a",
 "POST /admin?key=b&next=72057594037927936", "GET /k?k=b",
 "POST /admin?key=c&next=72057594037927935", "GET /admin?key=c", "GET /k?k=c", "GET /admin?key=c",
 "GET /m?k=d", "POST /admin?key=d&next=21", "GET /m?k=d",
 "POST /admin?key=e&next=18446744073709551615&start=18446744073709551610", "GET /admin?key=e",
 "GET /k?k=e", "GET /k?k=e", "GET /admin?key=e"]
--- error_code eval
[200, 200, 410, 200, 200, 410, 200, 200, 200, 200, 200, 200, 410, 200, 200, 200, 410, 200]
--- response_body_like eval
[qr/^1\n/,
 qr/^\{"key":"a","start":1,"issued":72057594037927935,"last":72057594037927935,"next":72057594037927936,"max":null,"used":\d+,"sold_out":true\}\n\z/,
 qr/^sold out\n/, qr/"next":72057594037927936,"max":null,"used":\d+,"sold_out":true\}\n\z/,
 qr/^\{"key":"b","start":1,"issued":72057594037927935,"last":72057594037927935,"next":72057594037927936,"max":null,"used":\d+,"sold_out":true\}\n\z/,
 qr/^sold out\n/,
 qr/"next":72057594037927935,"max":null,"used":\d+\}\n\z/, qr/"next":72057594037927935,"max":null,"used":\d+\}\n\z/,
 qr/^72057594037927935\n/, qr/"next":72057594037927936,"max":null,"used":\d+,"sold_out":true\}\n\z/,
 qr/^10\n/, qr/"next":21,"max":20,"used":\d+,"sold_out":true\}\n\z/, qr/^sold out\n/,
 qr/"issued":5,"last":18446744073709551614,"next":18446744073709551615,"max":null,"used":\d+\}\n\z/,
 qr/"next":18446744073709551615,"max":null,"used":\d+\}\n\z/,
 qr/^18446744073709551615\n/, qr/^sold out\n/,
 qr/"last":18446744073709551615,"next":null,"max":null,"used":\d+,"sold_out":true\}\n\z/]
--- no_error_log
[alert]



=== TEST 6: a Redis zone: refused moves leave nothing in Redis; its end of the range is 2^63-1
--- http_config
    ticket_zone r6:1m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
--- config
    location = /k { ticket_counter zone=r6 key=$arg_k; }
    location = /admin { ticket_admin zone=r6; }
--- pipelined_requests eval
["POST /admin?key=n1&next=9223372036854775809", "POST /admin?key=n2&next=0",
 "POST /admin?key=n3&next=5&start=10", "GET /k?k=a", "GET /k?k=a", "POST /admin?key=a&next=2",
 "GET /admin?key=n1", "GET /admin?key=n2", "GET /admin?key=n3", "GET /admin?key=a",
 "POST /admin?key=m&next=9223372036854775808", "GET /k?k=m"]
--- error_code eval
[400, 400, 400, 200, 200, 409, 404, 404, 404, 200, 200, 410]
--- response_body_like eval
["next is past the end of the number range", "next is below the counter's start",
 "next is below the counter's start", qr/^1\n/, qr/^2\n/, "would reissue", ("no such counter") x 3,
 qr/^\{"key":"a","start":1,"issued":2,"last":2,"next":3,"max":null,"used":\d+\}\n\z/,
 qr/"issued":9223372036854775807,"last":9223372036854775807,"next":9223372036854775808,"max":null,"used":\d+,"sold_out":true\}\n\z/,
 qr/^sold out\n/]
--- steps
redis $TEST_NGINX_REDIS_PORT EXISTS ticket:r6:n1 ticket:r6;n1 ticket:r6:n2 ticket:r6;n2 ticket:r6:n3 ticket:r6;n3 => "0"
redis $TEST_NGINX_REDIS_PORT GET ticket:r6:a => "2"
GET /k?k=a => 200 "3\n"
--- no_error_log
[alert]
