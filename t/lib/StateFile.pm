package StateFile;

# Crafted state files and planted files for the safety tests (t/012).
#
# The format (src/core/state/format.rs), little-endian:
#
#   header: "NGXTKST2" | version u32 = 2 | flags u32 = 0 | crc32 u32 of the 16 bytes before
#   frame:  len u32 | crc32 u32 of the payload | payload
#   record: tag u8 (1 mark, 2 retire) | key_len u8 | key | instance u64
#           | (mark only) start u64 | mark u64 | used u64
#
# Everything here runs in the test process (post_setup_server_root, init),
# the same way under the real Test::Nginx and the fallback runner.

use strict;
use warnings;

use Compress::Zlib ();
use Digest::SHA ();
use Exporter 'import';

our @EXPORT_OK = qw(header mark frame write_bytes facts);

sub header {
    my $head = pack('a8 V V', 'NGXTKST2', 2, 0);
    return $head . pack('V', Compress::Zlib::crc32($head));
}

# A mark record; an empty or undefined key is the zone's default counter.
sub mark {
    my ($key, $mark, %opt) = @_;
    $key //= '';
    my $start = $opt{start} // 1;
    return pack('C C', 1, length $key) . $key
        . pack('Q< Q< Q< Q<', $opt{instance} // 0x1234, $start, $mark, $opt{used} // 0);
}

sub frame {
    my $payload = join '', @_;
    return pack('V V', length $payload, Compress::Zlib::crc32($payload)) . $payload;
}

sub write_bytes {
    my ($path, $bytes) = @_;
    open my $fh, '>:raw', $path or die "$path: $!";
    print $fh $bytes;
    close $fh or die "$path: $!";
}

# What must not change about a file nginx must leave alone: its bytes,
# owner, mode and modification time.
sub facts {
    my ($path) = @_;
    my @st = lstat $path or return "missing: $path";
    open my $fh, '<:raw', $path or return "unreadable: $path";
    local $/;
    my $bytes = <$fh>;
    close $fh;
    return join ' ', Digest::SHA::sha256_hex($bytes), "uid=$st[4]", "gid=$st[5]",
        sprintf('mode=%o', $st[2] & 07777), "mtime=$st[9]";
}

1;
