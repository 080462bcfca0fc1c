# Safety of durable zones against what can sit at the state path and what a
# state file can hold: special files, symlinks, hard links, other users'
# files and directories, crafted contents, and the settings refused at
# configuration time. A refusal names the file and says why; nothing outside
# the state directory is ever written (the last block checks the planted
# targets). Each block has a zone of its own (HUP mode reuses zones by name).
# Under load and for nginx -t: scripts/fault --scenario special-files,
# --scenario crafted.
use lib 't/lib';
use File::Temp qw(tempdir);
use POSIX qw(mkfifo);
use Test::Nginx::Socket 'no_plan';
use StateFile qw(header mark frame write_bytes facts);

# Outside the server root, which the runner wipes between blocks.
my $dir = $ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-safety-XXXXXX', TMPDIR => 1, CLEANUP => 1);
# Files outside every state directory that planted links point to.
my $outside = $ENV{TEST_NGINX_OUTSIDE_DIR} = tempdir('ngx-ticket-outside-XXXXXX', TMPDIR => 1, CLEANUP => 1);
for my $name (qw(symlink-target hardlink-target)) {
    write_bytes("$outside/$name", "root:secret:outside the state directory\n");
    chmod 0640, "$outside/$name";
    chown 4242, 4243, "$outside/$name" if $> == 0 && $name eq 'symlink-target';
}
our %Before = map { $_ => facts("$outside/$_") } qw(symlink-target hardlink-target);

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a FIFO at the state path is refused at once, not opened for reading forever
--- http_config
    ticket_zone s1:32k state=$TEST_NGINX_STATE_DIR/fifo.state;
--- config
    location = /t { ticket_counter zone=s1; }
--- post_setup_server_root
my $path = "$ENV{TEST_NGINX_STATE_DIR}/fifo.state";
POSIX::mkfifo($path, 0600) or die "mkfifo: $!" unless -p $path;
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s1": "\S+\/fifo\.state" is not a regular file/



=== TEST 2: a symlink to /dev/zero is refused unread
--- http_config
    ticket_zone s2:32k state=$TEST_NGINX_STATE_DIR/zero.state;
--- config
    location = /t { ticket_counter zone=s2; }
--- post_setup_server_root
my $path = "$ENV{TEST_NGINX_STATE_DIR}/zero.state";
symlink '/dev/zero', $path or die "symlink: $!" unless -l $path;
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s2": "\S+\/zero\.state" is a symbolic link/



=== TEST 3: a symlink to a file outside the state directory is refused
--- http_config
    ticket_zone s3:32k state=$TEST_NGINX_STATE_DIR/link.state;
--- config
    location = /t { ticket_counter zone=s3; }
--- post_setup_server_root
my $path = "$ENV{TEST_NGINX_STATE_DIR}/link.state";
symlink "$ENV{TEST_NGINX_OUTSIDE_DIR}/symlink-target", $path or die "symlink: $!" unless -l $path;
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s3": "\S+\/link\.state" is a symbolic link/



=== TEST 4: a hard link is refused
--- http_config
    ticket_zone s4:32k state=$TEST_NGINX_STATE_DIR/hard.state;
--- config
    location = /t { ticket_counter zone=s4; }
--- post_setup_server_root
my $path = "$ENV{TEST_NGINX_STATE_DIR}/hard.state";
link "$ENV{TEST_NGINX_OUTSIDE_DIR}/hardlink-target", $path or die "link: $!" unless -e $path;
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s4": "\S+\/hard\.state" has 2 hard links/



=== TEST 5: a state file of another user is refused
--- skip_eval: 2: $> != 0
--- http_config
    ticket_zone s5:32k state=$TEST_NGINX_STATE_DIR/foreign.state;
--- config
    location = /t { ticket_counter zone=s5; }
--- post_setup_server_root
my $path = "$ENV{TEST_NGINX_STATE_DIR}/foreign.state";
StateFile::write_bytes($path, StateFile::header() . StateFile::frame(StateFile::mark('', 5)));
chown 4242, 4242, $path or die "chown: $!";
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s5": "\S+\/foreign\.state" is owned by uid 4242, not by the worker user or root/



=== TEST 6: a directory every user can write, without the sticky bit, is refused
--- http_config
    ticket_zone s6:32k state=$TEST_NGINX_STATE_DIR/open/t.state;
--- config
    location = /t { ticket_counter zone=s6; }
--- post_setup_server_root
my $d = "$ENV{TEST_NGINX_STATE_DIR}/open";
mkdir $d unless -d $d;
chmod 0777, $d or die "chmod: $!";
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s6": directory "\S+\/open" is writable by every user and has no sticky bit/



=== TEST 7: with the sticky bit (as /tmp) it is accepted
--- http_config
    ticket_zone s7:32k state=$TEST_NGINX_STATE_DIR/sticky/t.state;
--- config
    location = /t { ticket_counter zone=s7; }
--- post_setup_server_root
my $d = "$ENV{TEST_NGINX_STATE_DIR}/sticky";
mkdir $d unless -d $d;
chmod 01777, $d or die "chmod: $!";
--- request
GET /t
--- response_body
1
--- no_error_log
[error]



=== TEST 8: a mark at 2^56 is corruption
--- http_config
    ticket_zone s8:32k state=$TEST_NGINX_STATE_DIR/big.state;
--- config
    location = /t { ticket_counter zone=s8; }
--- post_setup_server_root
StateFile::write_bytes("$ENV{TEST_NGINX_STATE_DIR}/big.state",
    StateFile::header() . StateFile::frame(StateFile::mark('', '72057594037927936')));
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s8": corrupt state file "\S+\/big\.state": mark above the counters' limit at byte 28/



=== TEST 9: a mark at 2^63 (the top bit) is corruption too
--- http_config
    ticket_zone s9:32k state=$TEST_NGINX_STATE_DIR/top.state;
--- config
    location = /t { ticket_counter zone=s9; }
--- post_setup_server_root
StateFile::write_bytes("$ENV{TEST_NGINX_STATE_DIR}/top.state",
    StateFile::header() . StateFile::frame(StateFile::mark('k', '9223372036854775808')));
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s9": corrupt state file "\S+\/top\.state": mark above the counters' limit at byte 28/



=== TEST 10: a mark at the counters' limit: nothing left, sold out
--- http_config
    ticket_zone s10:32k state=$TEST_NGINX_STATE_DIR/limit.state;
--- config
    location = /t { ticket_counter zone=s10; }
--- post_setup_server_root
StateFile::write_bytes("$ENV{TEST_NGINX_STATE_DIR}/limit.state",
    StateFile::header() . StateFile::frame(StateFile::mark('', '72057594037927935')));
--- request
GET /t
--- error_code: 410
--- response_body
sold out



=== TEST 11: the end of the u64 range from a file: the last ticket once, then sold out
--- http_config
    ticket_zone s11:32k state=$TEST_NGINX_STATE_DIR/end.state;
--- config
    location = /t { ticket_counter zone=s11; }
--- post_setup_server_root
StateFile::write_bytes("$ENV{TEST_NGINX_STATE_DIR}/end.state",
    StateFile::header() . StateFile::frame(StateFile::mark('', 1, start => '18446744073709551614')));
--- pipelined_requests eval
["GET /t", "GET /t"]
--- error_code eval
[200, 410]
--- response_body eval
["18446744073709551615\n", "sold out\n"]



=== TEST 12: the same key twice in one frame is corruption
--- http_config
    ticket_zone s12:32k state=$TEST_NGINX_STATE_DIR/twice.state;
--- config
    location = /t { ticket_counter zone=s12; }
--- post_setup_server_root
StateFile::write_bytes("$ENV{TEST_NGINX_STATE_DIR}/twice.state",
    StateFile::header() . StateFile::frame(StateFile::mark('k', 50), StateFile::mark('k', 10)));
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s12": corrupt state file "\S+\/twice\.state": the same key twice in one frame at byte 63/



=== TEST 13: more keys than the zone fits
--- http_config
    ticket_zone s13:32k state=$TEST_NGINX_STATE_DIR/many.state;
--- config
    location = /t { ticket_counter zone=s13; }
--- post_setup_server_root
StateFile::write_bytes("$ENV{TEST_NGINX_STATE_DIR}/many.state",
    StateFile::header() . StateFile::frame(map { StateFile::mark("key$_", 3) } 1 .. 1000));
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s13": "\S+\/many\.state" holds more keys than the zone fits \(\d+\)/



=== TEST 14: damage in the first frame is never taken for a torn write
--- http_config
    ticket_zone s14:32k state=$TEST_NGINX_STATE_DIR/first.state;
--- config
    location = /t { ticket_counter zone=s14; }
--- post_setup_server_root
my $frame = StateFile::frame(StateFile::mark('', 100));
StateFile::write_bytes("$ENV{TEST_NGINX_STATE_DIR}/first.state",
    StateFile::header() . substr($frame, 0, length($frame) - 3));
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zone "s14": corrupt state file "\S+\/first\.state": truncated at byte 20/



=== TEST 15: a torn last frame after a good one is dropped
--- http_config
    ticket_zone s15:32k state=$TEST_NGINX_STATE_DIR/torn.state;
--- config
    location = /t { ticket_counter zone=s15; }
--- post_setup_server_root
my $last = StateFile::frame(StateFile::mark('', 900));
StateFile::write_bytes("$ENV{TEST_NGINX_STATE_DIR}/torn.state",
    StateFile::header() . StateFile::frame(StateFile::mark('', 100)) . substr($last, 0, 20));
--- request
GET /t
--- response_body
101



=== TEST 16: reserve=0
--- http_config
    ticket_zone s16:32k state=$TEST_NGINX_STATE_DIR/r0.state reserve=0;
--- config
    location = /t { ticket_counter zone=s16; }
--- request
GET /t
--- must_die
--- error_log
invalid value "reserve=0" in "ticket_zone" directive, it must be between 1 and 1000000000



=== TEST 17: reserve= past 10^9
--- http_config
    ticket_zone s17:32k state=$TEST_NGINX_STATE_DIR/r1.state reserve=1000000001;
--- config
    location = /t { ticket_counter zone=s17; }
--- request
GET /t
--- must_die
--- error_log
invalid value "reserve=1000000001" in "ticket_zone" directive, it must be between 1 and 1000000000



=== TEST 18: reserve=1000000000 is the largest
--- http_config
    ticket_zone s18:32k state=$TEST_NGINX_STATE_DIR/r2.state reserve=1000000000;
--- config
    location = /t { ticket_counter zone=s18; }
--- request
GET /t
--- response_body
1



=== TEST 19: two zones on one state file
--- http_config
    ticket_zone s19:32k state=$TEST_NGINX_STATE_DIR/shared.state;
    ticket_zone s19b:32k state=$TEST_NGINX_STATE_DIR/shared.state;
--- config
    location = /t { ticket_counter zone=s19; }
    location = /u { ticket_counter zone=s19b; }
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zones "s19" and "s19b" use the same state file "\S+\/shared\.state"/



=== TEST 19a: two zones on one state file, one through a symlinked directory
--- http_config
    ticket_zone s19c:32k state=$TEST_NGINX_STATE_DIR/shared19c.state;
    ticket_zone s19d:32k state=$TEST_NGINX_STATE_DIR/alias19/shared19c.state;
--- config
    location = /t { ticket_counter zone=s19c; }
    location = /u { ticket_counter zone=s19d; }
--- post_setup_server_root
my $link = "$ENV{TEST_NGINX_STATE_DIR}/alias19";
symlink $ENV{TEST_NGINX_STATE_DIR}, $link or die "symlink: $!" unless -l $link;
--- request
GET /t
--- must_die
--- error_log eval
qr/ticket zones "s19c" and "s19d" use the same state file "\S+\/alias19\/shared19c\.state"/



=== TEST 20: a static key longer than 64 bytes
--- http_config
    ticket_zone s20:32k;
--- config
    location = /t { ticket_counter zone=s20 key=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; }
--- request
GET /t
--- must_die
--- error_log
invalid value "key=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" in "ticket_counter" directive, a key is at most 64 bytes



=== TEST 21: a static key of 64 bytes is fine
--- http_config
    ticket_zone s21:32k;
--- config
    location = /t { ticket_counter zone=s21 key=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb; }
--- request
GET /t
--- response_body
1



=== TEST 22: files a killed writer left behind are removed at start, others stay
--- http_config
    ticket_zone s22:32k state=$TEST_NGINX_STATE_DIR/temps/t.state;
--- config
    location = /t { ticket_counter zone=s22; }
--- post_setup_server_root
my $d = "$ENV{TEST_NGINX_STATE_DIR}/temps";
mkdir $d unless -d $d;
for my $name ('t.state.tmp.12345', '.t.state.0123456789abcdef.tmp', 'notes', '.t.state.x.tmp') {
    StateFile::write_bytes("$d/$name", "left behind\n");
}
symlink "$ENV{TEST_NGINX_OUTSIDE_DIR}/symlink-target", "$d/.t.state.fedcba9876543210.tmp"
    unless -l "$d/.t.state.fedcba9876543210.tmp";
--- init
my $d = "$ENV{TEST_NGINX_STATE_DIR}/temps";
my $removed = sub {
    !-e "$d/t.state.tmp.12345" && !-e "$d/.t.state.0123456789abcdef.tmp"
        && !-l "$d/.t.state.fedcba9876543210.tmp"
};
# nginx may still be starting (under valgrind, for seconds)
my $deadline = time + 30;
select(undef, undef, undef, 0.1) until $removed->() || time > $deadline;
Test::More::ok($removed->(), "stale temporary files removed");
Test::More::ok(-e "$d/notes" && -e "$d/.t.state.x.tmp", "other files left alone");
--- request
GET /t
--- response_body
1



=== TEST 23: nothing outside the state directories was written or chowned
--- http_config
    ticket_zone s23:32k;
--- config
    location = /t { ticket_counter zone=s23; }
--- init
for my $name (sort keys %main::Before) {
    Test::More::is(StateFile::facts("$ENV{TEST_NGINX_OUTSIDE_DIR}/$name"), $main::Before{$name},
                   "$name untouched");
}
--- request
GET /t
--- response_body
1
