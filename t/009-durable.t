# Durable zones: counters kept in a state file across stops and starts.
#
# Every block that resumes counting follows a --- must_die block: before it
# starts an nginx that must die, Test::Nginx stops the running one with QUIT
# (a clean stop) and waits for it to exit; the block after starts nginx
# afresh, which reads the state file (its "counters restored from" notice
# shows it), so counting must resume exactly where it stopped, with no gap.
# use_hup() makes that the only way nginx stops here, in every mode: without
# it, TEST_NGINX_USE_VALGRIND=1 would also stop nginx after each block, and
# kill a master still writing the exact counts a second after it removed its
# pid file. (With alternating blocks there is never a reload to do.)
# check_accum_error_log(): a block with pipelined requests checks the error
# log after each response, for the notice logged when nginx started.
use File::Temp qw(tempdir);
use Test::Nginx::Socket 'no_plan';

# Outside the server root, which the runner wipes between blocks.
$ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-state-XXXXXX', TMPDIR => 1, CLEANUP => 1);

use_hup();
check_accum_error_log();
workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: no state file yet: counters start fresh, with a notice
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/t.state;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k start=100; }
--- request
GET /t
--- response_body
1
--- error_log eval
qr/ticket zone "t": state file "\S+\/t\.state" not found, counters start fresh/



=== TEST 2: a file that is not a state file stops nginx
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/foreign.state;
--- config
    location = /t { ticket_counter zone=t; }
--- post_setup_server_root
open my $fh, '>', "$ENV{TEST_NGINX_STATE_DIR}/foreign.state" or die $!;
print $fh "counter=42\n";
close $fh;
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "t": "\S+\/foreign\.state" is not a ticket state file/



=== TEST 3: after a clean stop and a start, counting resumes with no gap
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/t.state;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k start=100; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /k?k=a", "GET /k?k=a"]
--- response_body eval
["2\n", "3\n", "100\n", "101\n"]
--- error_log eval
qr/ticket zone "t": \d+ counters restored from "\S+\/t\.state"/



=== TEST 4: a corrupt state file stops nginx
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/corrupt.state;
--- config
    location = /t { ticket_counter zone=t; }
--- post_setup_server_root
open my $in, '<:raw', "$ENV{TEST_NGINX_STATE_DIR}/t.state" or die $!;
local $/;
my $bytes = <$in>;
close $in;
substr($bytes, 40, 1) = chr(ord(substr($bytes, 40, 1)) ^ 1);
open my $out, '>:raw', "$ENV{TEST_NGINX_STATE_DIR}/corrupt.state" or die $!;
print $out $bytes;
close $out;
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "t": corrupt state file "\S+\/corrupt\.state": checksum mismatch at byte \d+/



=== TEST 5: keys too, with a notice of what was restored
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/t.state;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k start=100; }
--- request
GET /k?k=a
--- response_body
102
--- error_log
ticket zone "t": 2 counters restored from



=== TEST 6: a truncated state file stops nginx
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/short.state;
--- config
    location = /t { ticket_counter zone=t; }
--- post_setup_server_root
open my $in, '<:raw', "$ENV{TEST_NGINX_STATE_DIR}/t.state" or die $!;
local $/;
my $bytes = <$in>;
close $in;
open my $out, '>:raw', "$ENV{TEST_NGINX_STATE_DIR}/short.state" or die $!;
print $out substr($bytes, 0, 30);
close $out;
--- request
GET /t
--- must_die
--- error_log eval
qr/corrupt state file "\S+\/short\.state": truncated at byte \d+/



=== TEST 7: a new key after the restart
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/t.state;
--- config
    location = /t { ticket_counter zone=t; }
    location = /k { ticket_counter zone=t key=$arg_k start=100; }
--- pipelined_requests eval
["GET /t", "GET /k?k=b"]
--- response_body eval
["4\n", "100\n"]
--- error_log eval
qr/ticket zone "t": \d+ counters restored from "\S+\/t\.state"/



=== TEST 8: a directory that does not exist stops nginx
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/missing/dir/t.state;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "t": open\(\) "\S+\/missing\/dir" failed: No such file or directory/



=== TEST 9: and again, with reserve= and another location layout
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/t.state reserve=5;
--- config
    location = /t { ticket_counter zone=t format=json; }
    location = /k { ticket_counter zone=t key=$arg_k; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t", "GET /t", "GET /t", "GET /k?k=b"]
--- response_body eval
["{\"ticket\":5}", "{\"ticket\":6}", "{\"ticket\":7}", "{\"ticket\":8}",
 "{\"ticket\":9}", "{\"ticket\":10}", "{\"ticket\":11}", "101\n"]
--- no_error_log
[error]
--- error_log eval
qr/ticket zone "t": \d+ counters restored from "\S+\/t\.state"/



=== TEST 10: reserve= without state=, and a bad reserve=
--- http_config
    ticket_zone t:1m reserve=10;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- must_die
--- error_log
"reserve=" needs "state=" or "redis=" in "ticket_zone" directive



=== TEST 11: a zone resized between runs keeps its counters
--- http_config
    ticket_zone t:2m state=$TEST_NGINX_STATE_DIR/t.state reserve=5;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- response_body
12
--- error_log eval
qr/ticket zone "t": \d+ counters restored from "\S+\/t\.state"/



=== TEST 12: reserve=0
--- http_config
    ticket_zone t:1m state=$TEST_NGINX_STATE_DIR/z.state reserve=0;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- must_die
--- error_log
invalid value "reserve=0" in "ticket_zone" directive



=== TEST 13: the counters went on from the file after all the failed starts
--- http_config
    ticket_zone t:2m state=$TEST_NGINX_STATE_DIR/t.state reserve=5;
--- config
    location = /t { ticket_counter zone=t; }
--- request
GET /t
--- response_body
13
--- error_log eval
qr/ticket zone "t": \d+ counters restored from "\S+\/t\.state"/
