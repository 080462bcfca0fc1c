# Self-test of the Test::Nginx runner in HUP reload mode: nginx is started
# once (with a master process) and reloaded for each block's config; a
# --- must_die block stops it first, and the next block starts a new one.
use Test::Nginx::Socket;

# The master's pid while each block's requests ran, by block number.
my %master;
add_response_body_check(sub {
    my ($block) = @_;
    my ($n) = $block->name =~ /TEST (\d+):/;
    open my $in, '<', $Test::Nginx::Util::PidFile or return;
    chomp($master{$n} = <$in> // '');
});

use_hup();
workers(2);
plan tests => 38;
no_shuffle();
run_tests();

is($master{2}, $master{1}, "block 2 ran on block 1's master: reloaded, not restarted");
is($master{4}, $master{1}, "block 4 too");
isnt($master{7}, $master{1}, "after the must_die block, a new master");
ok(!kill(0, $master{1}), "the first master was stopped");
is($master{8}, $master{7}, "and the new one is reloaded again");
is($master{10}, $master{7}, "blocks that check the error log ran on it too");

__DATA__
__DATA__

=== TEST 1: first block starts nginx
--- config
    location = /t { return 200 "one\n"; }
--- request
GET /t
--- response_body
one
--- no_error_log
[error]



=== TEST 2: a new config is in effect after the reload
--- config
    location = /t { return 200 "two\n"; }
--- init
my $conf = do { local (@ARGV, $/) = $Test::Nginx::Util::ConfFile; <> };
Test::More::like($conf, qr/^master_process on;$/m, "HUP mode turns the master process on");
Test::More::like($conf, qr/server_name\s+'Test-Nginx';\s+location = \/ver \{\s+return 200 '[^']+';/,
                 "a server answering /ver with the config version");
--- request eval
["GET /t", "GET /t", "GET /t"]
--- response_body eval
["two\n", "two\n", "two\n"]



=== TEST 3: no --- config: no reload, same server
--- request
GET /t
--- response_body
two



=== TEST 4: user files are rewritten on reload; pipelined requests
--- config
--- user_files
>>> hup.txt
reloaded
--- pipelined_requests eval
["GET /hup.txt", "GET /index.html"]
--- response_body eval
["reloaded\n", qr/It works!/]



=== TEST 5: a reload that fails keeps the previous config
--- config
    bogus_directive_in_reload on;
--- reload_fails
--- request
GET /hup.txt
--- error_code: 404
--- error_log
unknown directive "bogus_directive_in_reload"
[emerg]



=== TEST 6: must_die works in HUP mode too
--- config
    another_bogus_directive on;
--- must_die
--- suppress_stderr
--- error_log
unknown directive "another_bogus_directive"
[emerg]



=== TEST 7: and nginx comes back afterwards
--- config
    location = /t { return 200 "seven\n"; }
--- request
GET /t
--- response_body
seven



=== TEST 8: and reloads again
--- config
    location = /t { return 200 "eight\n"; }
--- request
GET /t
--- response_body
eight



=== TEST 9: a block's error log
--- config
    location = /t { return 200 "nine\n"; }
--- request
GET /nosuch-hup-9.txt
--- error_code: 404
--- error_log
nosuch-hup-9.txt



=== TEST 10: is not the next block's: logs are reopened on reload
--- config
    location = /t { return 200 "ten\n"; }
--- request
GET /t
--- response_body
ten
--- no_error_log
nosuch-hup-9.txt
