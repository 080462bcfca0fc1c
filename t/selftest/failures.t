# Self-test of the Test::Nginx runner: wrong expectations must fail.
#
# Runs the Test::Nginx file below (every block has wrong expectations) in a
# child perl with its own server root, and checks which of its subtests
# report "not ok".  Uses whichever Test::Nginx::Socket this prove run uses.
use strict;
use warnings;

use File::Spec;
use File::Temp qw(tempdir);
use Test::More;

my ($lib) = grep { !ref && -f "$_/Test/Nginx/Socket.pm" } @INC;
plan skip_all => 'Test::Nginx::Socket not found' unless $lib;
$lib = File::Spec->rel2abs($lib);

my $dir = tempdir(CLEANUP => 1);
mkdir "$dir/t" or die "mkdir: $!";
open my $fh, '>', "$dir/t/wrong.t" or die "open: $!";
print $fh do { local $/; <DATA> };
close $fh;

my $out = do {
    local $ENV{TEST_NGINX_SERVROOT} = "$dir/t/servroot";
    `cd '$dir' && '$^X' -I'$lib' t/wrong.t 2>&1`;
};

# [subtest description (substring), expected to pass?]
my @expected = (
    ['TEST 1: wrong body - status code ok', 1],
    ['TEST 1: wrong body - response_body', 0],
    ['TEST 2: wrong code and headers - status code ok', 0],
    ['TEST 2: wrong code and headers - header X-Foo ok', 0],
    ['TEST 2: wrong code and headers - header X-Gone not present', 0],
    ['TEST 2: wrong code and headers - header X-Absent ok', 0],
    ['TEST 3: like and unlike - status code ok', 0],
    ['TEST 3: like and unlike - header X-Num like ok', 0],
    ['TEST 3: like and unlike - raw resp headers like', 0],
    ['TEST 3: like and unlike - response_body_unlike', 0],
    ['TEST 4: error logs - status code ok', 1],
    ['TEST 4: error logs - pattern "this never appears" should match', 0],
    ['TEST 4: error logs - pattern "(?^:nor\s+this)" should match', 0],
    ['TEST 4: error logs - pattern "No such file" should not match', 0],
    ['TEST 4: error logs - pattern "[notice]" does not match', 1],
    ['TEST 5: must_die, but nginx starts - die as expected', 0],
    ['TEST 6: must_die with the wrong exit code - die with the expected exit code', 0],
    ['ERROR: client socket timed out - t/wrong.t TEST 7', 0],
    ['TEST 8: pipelined - response_body - response is expected (repeated req 0, req 0)', 1],
    ['TEST 8: pipelined - response_body - response is expected (repeated req 0, req 1)', 0],
    ['TEST 9: regex body - response_body - like', 0],
    ['TEST 10: response_body_like - response_body_like', 0],
);

my %result;    # description => "ok" / "not ok"
while ($out =~ /^(not ok|ok) \d+ - (.*)$/mg) {
    $result{$2} = $1;
}
for my $e (@expected) {
    my ($desc, $pass) = @$e;
    my @hits = grep { index($_, $desc) >= 0 } keys %result;
    is(scalar @hits, 1, "one subtest for: $desc");
    is($result{$hits[0] // ''}, $pass ? 'ok' : 'not ok',
       ($pass ? 'passes: ' : 'fails: ') . $desc);
}
is(scalar(grep { $_ eq 'not ok' } values %result),
   scalar(grep { !$_->[1] } @expected), 'no other subtest failed')
    or diag $out;

done_testing();

__DATA__
use Test::Nginx::Socket 'no_plan';
no_shuffle();
run_tests();

__DATA__

=== TEST 1: wrong body
--- config
    location = /t { return 200 "hello\n"; }
--- request
GET /t
--- response_body
goodbye



=== TEST 2: wrong code and headers
--- config
    location = /t { add_header X-Foo bar; add_header X-Gone here; return 200 "x"; }
--- request
GET /t
--- error_code: 201
--- response_headers
X-Foo: baz
!X-Gone
X-Absent: something



=== TEST 3: like and unlike
--- config
    location = /t { add_header X-Num abc; return 404 "text"; }
--- request
GET /t
--- error_code_like: ^2
--- response_headers_like
X-Num: \d+
--- raw_response_headers_like: X-Nope
--- response_body_unlike: ^te



=== TEST 4: error logs
--- config
    location = /missing { root html; }
--- log_level: error
--- request
GET /missing
--- error_code: 404
--- error_log eval
["this never appears", qr/nor\s+this/]
--- no_error_log
No such file
[notice]



=== TEST 5: must_die, but nginx starts
--- config
    location = /t { return 200; }
--- must_die



=== TEST 6: must_die with the wrong exit code
--- config
    bogus_directive on;
--- must_die: 2
--- suppress_stderr
--- error_log
[emerg]



=== TEST 7: client timeout without --- abort
--- config
    location = /t { return 200 "x"; }
--- raw_request eval
"GET /t HTTP/1.1\r\nHost: localhost\r\n"
--- timeout: 200ms
--- ignore_response



=== TEST 8: pipelined
--- config
    location = /t { return 200 "$arg_n"; }
--- pipelined_requests eval
["GET /t?n=1", "GET /t?n=2"]
--- response_body eval
["1", "3"]



=== TEST 9: regex body
--- config
    location = /t { return 200 "abc"; }
--- request
GET /t
--- response_body eval
qr/^x/



=== TEST 10: response_body_like
--- config
    location = /t { return 200 "abc"; }
--- request
GET /t
--- response_body_like: ^b
