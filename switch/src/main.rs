fn main() {
    println!("vswitch: not yet");
}
